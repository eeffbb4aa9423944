#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job: the toy-world demo on the CPU. Arguments go to `bnr demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/bnr demo "$@"
