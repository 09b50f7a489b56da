#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install adcl into it with the given extras (default: none).
#   bash launch/setup.sh            # training
#   bash launch/setup.sh test       # training + tests
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "adcl needs Python >= 3.11, found $(python3 --version)" >&2; exit 1; }
[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
