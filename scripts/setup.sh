#!/usr/bin/env bash
# Create .venv (if missing) and install bnr with its pinned CPU torch in one resolver run.
# torch==2.13.0 must be in the same install as transformers/peft, else pip may pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q "torch==2.13.0" -e ".[dev,service]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, transformers, peft; print(f'bnr env: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}')"
