#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) on a managed jax-CUDA host without network:
#
#   bash benchmarks/gpu_check.sh OUT_DIR
#
# Bring along, in the checkout (git-ignored folders travel when named, e.g. a device tool's
# `carry`), prepared where there is internet:
#   .whl/   the wheels the image lacks, for its Python (3.12 on the managed image):
#             pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#               ml-collections==1.1.0 dm-pix==0.4.5
#   data/fashion-mnist/   the four Fashion-MNIST IDX .gz files (30 MB; Debian's
#             dataset-fashion-mnist has them in /usr/share/datasets/fashion-mnist)
# The wheels go to /tmp/adcl-site; adcl itself runs from this checkout (PYTHONPATH), so no
# install is needed. About 6-8 minutes on one H200; the tables land in OUT_DIR/gpu_check.md.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
python=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/adcl-site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/adcl-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
exec "$python" benchmarks/gpu_check.py --out "$out" --fmnist data/fashion-mnist "${@:2}"
