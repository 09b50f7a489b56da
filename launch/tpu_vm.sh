#!/usr/bin/env bash
# Train adcl on a Cloud TPU VM or pod slice: one process per TPU host, joined by jax.distributed.
#
#   PROJECT=my-project ZONE=us-central2-b TPU_NAME=adcl-v4 ACCELERATOR_TYPE=v4-32 \
#   WORKDIR=gs://my-bucket/runs/cifar10_simclr_clae CONFIG=configs/cifar10_simclr.py \
#   TFDS_DATA_DIR=gs://my-bucket/tensorflow_datasets \
#     bash launch/tpu_vm.sh all          # create, install, train
#
# Steps (run one, or `all` = create install train):
#   preflight  compile CONFIG's step for ACCELERATOR_TYPE here, with no TPU (python -m
#            adcl.compile): stops before anything is paid for if the batch does not fit in
#            HBM. create and train run it first (once); SKIP_PREFLIGHT=1 skips it
#   create   create the TPU VM / slice (SPOT=1 or PREEMPTIBLE=1 for cheaper, interruptible ones)
#   install  copy this checkout (git HEAD) to every worker and run launch/setup.sh tpu there
#   train    start training on every worker (--worker=all), in the background; rerun to resume
#   logs     follow worker 0's log
#   copy     copy the workdir (metrics, eval, figures; checkpoints with COPY_CHECKPOINTS=1)
#            to ./results/$TPU_NAME
#   delete   delete the TPU VM
#
# Variables: PROJECT, ZONE, TPU_NAME (always); ACCELERATOR_TYPE (create, default v4-8),
# RUNTIME_VERSION (create, default tpu-ubuntu2204-base); CONFIG, WORKDIR (train, copy;
# WORKDIR must be gs:// so that every host reads and writes the same checkpoints);
# DATA_DIR (train, optional: data.data_dir, e.g. a gs:// TFDS directory, or converted records
# on a disk every host mounts, docs/data.md; TFDS_DATA_DIR is its older name); CONFIG_ARG (optional,
# e.g. clae or baseline for the paper configs); EXTRA_FLAGS (optional, more --config.key=value).
# SKIP_PREFLIGHT=1 (create, train: go on without compiling first). DRY_RUN=1 prints every
# command instead of running it.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

SCRIPT=tpu_vm.sh
# shellcheck source=launch/common.sh
source "$ROOT/launch/common.sh"

ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-8}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"

gcloud_tpu() { run gcloud compute tpus tpu-vm "$@" --project="$PROJECT" --zone="$ZONE"; }

PREFLIGHT_DONE=0
preflight() {
  [[ "${SKIP_PREFLIGHT:-0}" == 1 || "$PREFLIGHT_DONE" == 1 ]] && return 0
  need CONFIG
  [[ -f "$ROOT/${CONFIG#"$ROOT"/}" || -f "$CONFIG" ]] || die "CONFIG=$CONFIG: no such file"
  local python="$ROOT/.venv/bin/python"
  [[ -x "$python" ]] || python=python3
  local args=(-m adcl.compile "--config=$CONFIG${CONFIG_ARG:+:$CONFIG_ARG}"
              "--topology=$ACCELERATOR_TYPE")
  if [[ -n "${EXTRA_FLAGS:-}" ]]; then
    local extra
    read -r -a extra <<< "$EXTRA_FLAGS"
    args+=("${extra[@]}")
  fi
  (cd "$ROOT" && run "$python" "${args[@]}") || die "the preflight for $ACCELERATOR_TYPE" \
    "failed (its line above): change the config or the slice, or set SKIP_PREFLIGHT=1"
  PREFLIGHT_DONE=1
}

create() {
  need PROJECT ZONE TPU_NAME
  preflight
  local interruptible=()
  [[ "${SPOT:-0}" == 1 ]] && interruptible=(--spot)
  [[ "${PREEMPTIBLE:-0}" == 1 ]] && interruptible=(--preemptible)
  gcloud_tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" \
    --version="$RUNTIME_VERSION" "${interruptible[@]}"
}

install() {
  need PROJECT ZONE TPU_NAME
  local archive="/tmp/adcl-$TPU_NAME.tar.gz"
  run git -C "$ROOT" archive --format=tar.gz -o "$archive" HEAD
  gcloud_tpu scp "$archive" "$TPU_NAME:adcl.tar.gz" --worker=all
  gcloud_tpu ssh "$TPU_NAME" --worker=all \
    --command="mkdir -p adcl && tar xzf adcl.tar.gz -C adcl && cd adcl && bash launch/setup.sh tpu"
}

train() {
  need PROJECT ZONE TPU_NAME CONFIG WORKDIR
  [[ "$WORKDIR" == gs://* ]] || die "WORKDIR=$WORKDIR must be a gs:// path shared by every TPU host"
  preflight
  local config_spec="$CONFIG${CONFIG_ARG:+:$CONFIG_ARG}"
  local flags="--config=$config_spec --workdir=$WORKDIR --distributed"
  local data_dir="${DATA_DIR:-${TFDS_DATA_DIR:-}}"
  [[ -n "$data_dir" ]] && flags+=" --config.data.data_dir=$data_dir"
  flags+="${EXTRA_FLAGS:+ $EXTRA_FLAGS}"
  # nohup + background: the run outlives the ssh session; a rerun resumes from WORKDIR.
  gcloud_tpu ssh "$TPU_NAME" --worker=all \
    --command="cd adcl && nohup .venv/bin/python -m adcl.train $flags > train.log 2>&1 &"
}

logs() {
  need PROJECT ZONE TPU_NAME
  gcloud_tpu ssh "$TPU_NAME" --worker=0 --command="tail -n 50 -f adcl/train.log"
}

copy() {
  need WORKDIR TPU_NAME
  local exclude=()
  [[ "${COPY_CHECKPOINTS:-0}" == 1 ]] || exclude=(--exclude="checkpoints/.*")
  run mkdir -p "results/$TPU_NAME"
  run gcloud storage rsync --recursive "${exclude[@]}" "$WORKDIR" "results/$TPU_NAME"
}

delete() {
  need PROJECT ZONE TPU_NAME
  gcloud_tpu delete "$TPU_NAME" --quiet
}

[[ $# -ge 1 ]] || die "give a step: preflight, create, install, train, logs, copy, delete or all"
for step in "$@"; do
  case "$step" in
    preflight|create|install|train|logs|copy|delete) "$step" ;;
    all) create; install; train ;;
    *) die "unknown step '$step'; choose preflight, create, install, train, logs, copy, delete or all" ;;
  esac
done
