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
# 3. with 2 GPUs, FSDP (nccl): the toy world's user job on 1 GPU and under
#    `accelerate launch --use_fsdp --fsdp_version 2` on 2 (float32, dropout 0), the adapters' max difference; then
#    the same job from a base loaded into CPU RAM (model.device=cpu, bf16), each process's shard moved to its GPU.
# Writes OUT_DIR/p6_ddp.json, OUT_DIR/p6_vllm.json, OUT_DIR/p6_fsdp.txt and OUT_DIR/gpu_scale.log.
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
if [ "$NGPU" -ge 2 ]; then
  JOB=(finetune -c toy user.defense=none p=0.1 user.lora.dropout=0)
  FSDP=(-m accelerate.commands.launch --use_fsdp --fsdp_version 2 --num_processes 2 -m bnr.cli)
  rm -rf "$OUT/fsdp-1" "$OUT/fsdp-2" "$OUT/fsdp-2-cpu-load"
  timeout 600 python -m bnr.cli "${JOB[@]}" model.dtype=float32 out="$OUT/fsdp-1" 2>&1 | tail -n 3 | tee -a "$LOG"  # builds the toy base
  timeout 600 python "${FSDP[@]}" "${JOB[@]}" model.dtype=float32 out="$OUT/fsdp-2" 2>&1 | grep -E "FSDP|error|deliverable" | tee -a "$LOG"
  timeout 600 python "${FSDP[@]}" "${JOB[@]}" model.device=cpu model.dtype=bfloat16 out="$OUT/fsdp-2-cpu-load" 2>&1 \
    | grep -E "FSDP|error|deliverable" | tee -a "$LOG"
  python - "$OUT" <<'PY' 2>&1 | tee "$OUT/p6_fsdp.txt" | tee -a "$LOG"
import sys
from safetensors.torch import load_file

out = sys.argv[1]
a, b = (load_file(f"{out}/{n}/adapter_model.safetensors") for n in ("fsdp-1", "fsdp-2"))
print("fsdp 2 GPUs vs 1 GPU, max abs diff:", max(float((a[k] - b[k]).abs().max()) for k in a))
print("largest weight:", max(float(a[k].abs().max()) for k in a))
PY
else
  echo "one GPU: the FSDP check needs 2 (it runs on 2 CPU processes in the suite: tests/test_fsdp.py)" | tee -a "$LOG"
fi
