#!/usr/bin/env bash
# Train adcl on a SLURM GPU cluster: one process per GPU, on as many nodes as the job has.
#
#   CONFIG=configs/cifar10_simclr.py WORKDIR=/shared/runs/c10_clae \
#     sbatch --nodes=2 --gpus-per-node=8 --ntasks-per-node=8 launch/slurm_gpu.sh
#
# One process per GPU because that is what jax.distributed.initialize() detects under SLURM:
# each task takes the GPU of its SLURM_LOCALID, so every task must see all of its node's GPUs
# (--gpus-per-node, not --gpus-per-task) and --ntasks-per-node must equal the GPUs per node.
# Before submitting, once, on a node that shares the file system: `bash launch/setup.sh cuda`
# (the job uses $SUBMIT_DIR/.venv). WORKDIR must be on a file system every node sees, or gs://.
#
# Variables: CONFIG, WORKDIR (required); CONFIG_ARG (optional: clae or baseline for the paper
# configs); DATA_DIR (optional: data.data_dir, a prepared TFDS directory
# or converted records; TFDS_DATA_DIR is its older name); EXTRA_FLAGS (optional, more
# --config.key=value). DRY_RUN=1 prints the srun command instead of running it.
# Preemption and the time limit: SLURM sends SIGTERM 120 s before the end (--signal below),
# every process checkpoints the step and exits 143, and --requeue starts the job again, which
# resumes from that checkpoint.
#SBATCH --job-name=adcl
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --output=adcl-%j.out
set -euo pipefail
# sbatch runs a copy of this script from its spool folder: the checkout is where it was submitted.
ROOT="${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"

SCRIPT=slurm_gpu.sh
# shellcheck source=launch/common.sh
source "$ROOT/launch/common.sh"

train_args
TRAIN_ARGS+=(--distributed)
[[ "${DRY_RUN:-0}" == 1 || -n "${SLURM_JOB_ID:-}" ]] \
  || die "not inside a SLURM job: submit with sbatch (see the top of launch/slurm_gpu.sh)"
[[ "${DRY_RUN:-0}" == 1 || -x "$ROOT/.venv/bin/python" ]] \
  || die "$ROOT/.venv: run 'bash launch/setup.sh cuda' there first"

cd "$ROOT"
# --kill-on-bad-exit: one process failing stops the others instead of leaving them waiting in
# a collective.
run srun --kill-on-bad-exit=1 "$ROOT/.venv/bin/python" "${TRAIN_ARGS[@]}"
