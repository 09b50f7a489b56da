#!/usr/bin/env bash
# Train adcl on one host with one or more NVIDIA GPUs: one process drives every local GPU
# (the global batch is sharded over them). Rerunning the same command resumes.
#
#   CONFIG=configs/cifar10_simclr.py WORKDIR=workdirs/cifar10_simclr_clae bash launch/gpu.sh
#
# Variables: CONFIG, WORKDIR (required); CONFIG_ARG (optional: clae or baseline for the paper
# configs); DATA_DIR (optional: data.data_dir, a prepared TFDS directory
# or converted records; TFDS_DATA_DIR is its older name); GPUS (optional, e.g. 0,1:
# the GPUs to use, default all); EXTRA_FLAGS (optional, more --config.key=value);
# SETUP=0 skips `launch/setup.sh cuda`; DRY_RUN=1 prints the commands instead of running them.
# On SIGTERM/SIGINT (a preempted VM, Ctrl-C) the run checkpoints the current step and exits
# with 143/130; RESTART_ON_PREEMPTION=1 reruns it until it finishes or fails otherwise.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

SCRIPT=gpu.sh
# shellcheck source=launch/common.sh
source "$ROOT/launch/common.sh"

train_args
if [[ "${SETUP:-1}" == 1 ]]; then
  run bash "$ROOT/launch/setup.sh" cuda
fi
env_prefix=(env)
[[ -n "${GPUS:-}" ]] && env_prefix+=("CUDA_VISIBLE_DEVICES=$GPUS")

cd "$ROOT"
while true; do
  status=0
  run "${env_prefix[@]}" "$ROOT/.venv/bin/python" "${TRAIN_ARGS[@]}" || status=$?
  if [[ "${RESTART_ON_PREEMPTION:-0}" == 1 && ( $status == 143 || $status == 130 ) \
        && "${DRY_RUN:-0}" != 1 ]]; then
    echo "gpu.sh: run stopped (exit $status); resuming" >&2
    continue
  fi
  exit "$status"
done
