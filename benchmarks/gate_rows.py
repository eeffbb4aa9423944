"""The safety gate's answers row by row, as configured now against as it was, on the raw SmolLM2 base.

    nice -n 10 python benchmarks/gate_rows.py [--limit 100] [--threads 1]

The `smollm2` preset's base (SmolLM2-135M-Instruct, no alignment stage), the gate's two benchmarks (`limit` prompts
of the shared `harmful_prompts_eval` -> HS with the `keyword` judge, of `benign_prompts_eval` -> over-refusal, 80 new
tokens at most), each run twice on the same model in one process: `before` (batches of 64, every row decoded to the
cap or its end of sequence by transformers' `generate`) and `after` (the gate's defaults: one batch of 128, each
answer ended once the refusal rule's reading of it is fixed, `gate.stop_when_decided`). Prints per benchmark: both
numbers, the CPU seconds of each run, how many rows got the same refusal verdict, how many `after` answers are the
start of their `before` answer, and the answer tokens each decoded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=100, help="prompts per benchmark")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 on a shared machine)")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from bnr.eval.benchmarks import make_benchmark, run_benchmark
    from bnr.eval.refusal import is_refusal
    from bnr.eval.target import load_target, resolve_target
    from bnr.service.jobspec import job_settings
    from bnr.service.settings import BasePolicy, SafetyGate

    policy = BasePolicy(
        name="smollm2",
        preset="smollm2",
        defense="sft",
        overrides=["align.enabled=false", "guard.no_buffer_registered=true"],
    )
    cfg = job_settings(policy, 10)
    model, tok = load_target(resolve_target("", cfg.model))
    after = SafetyGate(harmful="harmful", over_refusal="over-refusal", limit=args.limit)
    gates = {"before": dataclasses.replace(after, batch_size=64, stop_when_decided=False), "after": after}
    options = {"harmful": {"data": {"source": "shared", "path": "harmful_prompts_eval"}}}
    for name in ("harmful", "over-refusal"):
        runs = {}
        for label, gate in gates.items():
            bench = make_benchmark(name, limit=gate.limit, **options.get(name, {}))
            cpu = time.process_time()
            result = run_benchmark(
                bench,
                model,
                tok,
                template=cfg.template,
                batch_size=gate.batch_size,
                max_new_tokens=gate.max_new_tokens,
                progress=False,
                stop_when_decided=gate.stop_when_decided,
            )
            runs[label] = (result, time.process_time() - cpu)
        b, a = (runs[k][0].samples for k in ("before", "after"))
        pairs = list(zip((r["completion"] for r in b), (r["completion"] for r in a)))
        line = {
            "benchmark": name,
            "value_before": runs["before"][0].value,
            "value_after": runs["after"][0].value,
            "cpu_before_s": round(runs["before"][1], 1),
            "cpu_after_s": round(runs["after"][1], 1),
            "rows": len(pairs),
            "same_refusal_verdict": sum(is_refusal(x) == is_refusal(y) for x, y in pairs),
            "after_is_start_of_before": sum(x.startswith(y) for x, y in pairs),
            "answer_tokens_before": sum(len(tok(x, add_special_tokens=False).input_ids) for x, _ in pairs),
            "answer_tokens_after": sum(len(tok(y, add_special_tokens=False).input_ids) for _, y in pairs),
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
