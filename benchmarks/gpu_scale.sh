#!/usr/bin/env bash
# P6: the scale-out paths on CUDA, randomly initialised models of real shape (nothing is downloaded). Prepared
# for a session with a GPU; not run in the session that wrote it (docs/scale.md says what has been measured).
#
#   bash benchmarks/gpu_scale.sh [OUT_DIR]        # about 2-4 minutes on one H100/H200-class card
#
# 1. a 2-step training job of bnr's loop on SmolLM2-135M's shape (bf16, LoRA r 32, global batch 8 x 512 tokens):
#    on 2 GPUs under torchrun (with rank 0's 1-process reference and the adapter difference), else on 1 GPU;
# 2. eval.backend=vllm: the same shape with a random rank-64 LoRA (the paper's merged r_U + r_R) served by vLLM,
#    64 greedy prompts, compared with transformers.generate on 16 of them. Skipped (and said so) without vllm.
# Writes OUT_DIR/p6_ddp.json, OUT_DIR/p6_vllm.json and OUT_DIR/gpu_scale.log.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-.}}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
LOG="$OUT/gpu_scale.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$LOG"
NGPU=$(nvidia-smi -L | wc -l)
if [ "$NGPU" -ge 2 ]; then
  timeout 600 python -m torch.distributed.run --standalone --nproc_per_node=2 benchmarks/p6_scale.py ddp --out "$OUT" 2>&1 | tee -a "$LOG"
else
  timeout 600 python benchmarks/p6_scale.py ddp --out "$OUT" 2>&1 | tee -a "$LOG"
fi
if python -c "import vllm" 2>/dev/null; then
  timeout 600 python benchmarks/p6_scale.py vllm --out "$OUT" 2>&1 | tee -a "$LOG"
else
  echo "vllm is not installed here: the vLLM check is skipped (pip install vllm in an environment of its own)" | tee -a "$LOG"
fi
