#!/usr/bin/env bash
# P5: P1 (user fine-tuning step) and P2 (merge at Llama-3-8B shapes) on a CUDA device, randomly initialised models
# of real shapes (SmolLM2-135M and Llama-3-8B, bf16; nothing is downloaded). Prepared for a session that has a GPU:
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # a few minutes on one H100/H200-class card
#
# Needs torch with CUDA, transformers and peft (the project's install); writes OUT_DIR/gpu.json (card name under
# machine.gpu) and OUT_DIR/gpu.log. Timings use the wall clock with torch.cuda.synchronize around every round.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-.}}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.log"
python benchmarks/run.py --device cuda --only P1,P2 --reps 3 --threads 4 --out "$OUT/gpu.json" 2>&1 | tee -a "$OUT/gpu.log"
