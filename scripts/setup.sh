#!/usr/bin/env bash
# Create .venv (if missing) and install bnr's locked dependencies (requirements.lock: exact versions with sha256
# hashes, the CPU torch 2.13.0+cpu included; regenerate it with scripts/lock.sh), then bnr itself (editable).
# VENV=<dir> installs into another environment (the lock's own test uses a throwaway one).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q --require-hashes -r requirements.lock
"$VENV/bin/python" -m pip install -q --no-deps --require-hashes -r requirements-nodeps.lock
"$VENV/bin/python" -m pip install -q --no-deps -e .
# nanogcg's declared requirements (an old transformers, protobuf, sentencepiece) are the only ones allowed to miss
broken=$("$VENV/bin/python" -m pip check | grep -v -e '^nanogcg 0.3.0 ' -e '^No broken requirements' || true)
if [ -n "$broken" ]; then echo "$broken" >&2; exit 1; fi
"$VENV/bin/python" -c "import torch, transformers, peft; print(f'bnr env: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}')"
