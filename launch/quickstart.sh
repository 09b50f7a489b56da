#!/usr/bin/env bash
# Set up and run the quickstart: CLAE on Fashion-MNIST, a small ResNet, a few minutes on 2 CPU cores.
# Data: Debian's dataset-fashion-mnist (installed here when apt is available), else TFDS
# (downloads; needs internet). Extra arguments go to adcl.train, e.g. --config.train.num_epochs=4.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
fmnist=/usr/share/datasets/fashion-mnist
source_flag=()
if [[ ! -d $fmnist ]] && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null || true
fi
if [[ ! -d $fmnist ]]; then
  echo "No $fmnist: reading Fashion-MNIST through TFDS instead (downloads once)." >&2
  source_flag=(--config.data.source=tfds)
fi
exec .venv/bin/python -m adcl.train --config configs/quickstart.py \
  --workdir "${WORKDIR:-workdirs/quickstart}" "${source_flag[@]}" "$@"
