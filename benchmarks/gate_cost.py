"""The service's safety gate against the user's training it checks, on the SmolLM2 shape, side by side in one process.

    nice -n 10 python benchmarks/gate_cost.py [--rows 100] [--limit 100] [--reps 1] [--threads 1] [--cap32]
        [--after-only] [--base runs/smollm2/aligned]

A service base `smollm2`: the `smollm2` preset with the raw SmolLM2-135M-Instruct as the base (no alignment stage),
or `--base FOLDER`, a model folder such as the aligned base `bnr align -c smollm2` writes (what a provider offers:
a base that refuses, so its deliverables' harmful answers end at their refusal), and defense `sft` (the UserLoRA
training every defense runs; no provider artifacts). The preset's own user job is `--rows 500` (`user.n`, 1 epoch).

- training: what a worker's job runs, `bnr.orchestrate.fine_tune` with the service's job arguments
  (`bnr.service.jobspec.job_arguments`) and the default hyperparameters (all `auto`: the preset's `user.train`),
  on `--rows` chat rows of the shared SST-2 training split (a small customer file);
- gate: `bnr.service.gate.probe` on that deliverable (`limit` prompts of the shared `harmful_prompts_eval` -> HS
  with the `keyword` judge, of `benign_prompts_eval` -> over-refusal, generation capped at 80 new tokens), as
  configured now (`after`: one batch of 128 per benchmark, each answer ended once the refusal rule's reading of it
  is fixed and dropped from its batch, `gate.stop_when_decided`) and as it was (`before`: batches of 64, every
  row decoded to the cap or its end of sequence, transformers' `generate`). `--cap32` adds `after, cap 32`
  (`gate.max_new_tokens: 32`, a shorter window: not the same verdicts, shown for its cost). The base's numbers are
  computed once per prepared base and cached, so a job's gate is this probe.
- load: `bnr.eval.target.load_target` of the base alone (part of each gate's cost: the probe loads the
  deliverable; the training loads the base too).

Prints wall and CPU seconds (this process, all threads) of each, the gate / training ratios (target <= 0.25) and
the gate's numbers both ways (a cheaper gate must not change its verdicts).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _timed(fn: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _customer_file(rows: int, path: Path) -> Path:
    """`rows` chat rows of the shared SST-2 training split, as a tenant uploads them."""
    from bnr.config import DataConfig
    from bnr.data.sources import load_records

    records = load_records(DataConfig(source="shared", path="sst2_train", limit=rows))
    with path.open("w", encoding="utf-8") as out:
        for r in records:
            prompt = r.instruction + (f"\n{r.input}" if r.input else "")
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": r.output}]
            out.write(json.dumps({"messages": messages}) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100, help="training rows (the customer's file)")
    ap.add_argument("--limit", type=int, default=None, help="gate prompts per benchmark (default: the gate's)")
    ap.add_argument("--reps", type=int, default=1, help="repetitions (training and both gates each time)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default torch's; 1 on a shared machine)")
    ap.add_argument("--cap32", action="store_true", help="also time the gate with a 32-token cap")
    ap.add_argument("--after-only", action="store_true", help="time only the gate as configured now")
    ap.add_argument("--base", default=None, help="a model folder as the base (default: the raw SmolLM2 instruct)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    from bnr.eval.target import load_target, resolve_target
    from bnr.orchestrate import fine_tune
    from bnr.service.gate import probe
    from bnr.service.jobspec import job_arguments, job_settings, resolve
    from bnr.service.settings import BasePolicy, SafetyGate, ServiceSettings

    settings = ServiceSettings()
    policy = BasePolicy(
        name="smollm2",
        preset="smollm2",
        defense="sft",
        overrides=["align.enabled=false", "guard.no_buffer_registered=true"]
        + ([f"model.name_or_path={Path(args.base).resolve()}"] if args.base else []),
    )
    shared = {"harmful": {"data": {"source": "shared", "path": "harmful_prompts_eval"}}}
    after = SafetyGate(harmful="harmful", over_refusal="over-refusal", options=shared)
    if args.limit is not None:
        after = dataclasses.replace(after, limit=args.limit)
    gates = {
        "gate after": after,
        "gate before": dataclasses.replace(after, batch_size=64, stop_when_decided=False),
    }
    if args.cap32:
        gates["gate after cap32"] = dataclasses.replace(after, max_new_tokens=32)
    if args.after_only:
        gates = {"gate after": after}
    hp = resolve(policy, {})
    cfg = job_settings(policy, settings.save_every)
    rows: dict[str, list[tuple[float, float]]] = {"training": [], "load": [], **{name: [] for name in gates}}
    scores: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bnr-gate-cost-") as tmp:
        data = _customer_file(args.rows, Path(tmp) / "train.jsonl")
        for rep in range(args.reps):
            work = Path(tmp) / f"job{rep}"
            kwargs = job_arguments(policy, {}, hp, seed=1, work=work, save_every=settings.save_every)
            result, wall, cpu = _timed(lambda kw=kwargs: fine_tune(data, reuse=False, **kw))
            rows["training"].append((wall, cpu))
            print(f"rep {rep} training: wall {wall:.1f} s, cpu {cpu:.1f} s", flush=True)
            _, wall, cpu = _timed(lambda: load_target(resolve_target("", cfg.model)))
            rows["load"].append((wall, cpu))
            print(f"rep {rep} load: wall {wall:.1f} s, cpu {cpu:.1f} s", flush=True)
            order = list(gates) if rep % 2 == 0 else list(reversed(gates))
            for name in order:
                gate = gates[name]
                scores[name], wall, cpu = _timed(lambda g=gate, d=result.deliverable: probe(cfg, g, d))
                rows[name].append((wall, cpu))
                print(f"rep {rep} {name}: wall {wall:.1f} s, cpu {cpu:.1f} s, {json.dumps(scores[name])}", flush=True)
    train_wall = statistics.median(w for w, _ in rows["training"])
    train_cpu = statistics.median(c for _, c in rows["training"])
    base = f" ({args.base})" if args.base else ""
    print(
        f"SmolLM2-135M-Instruct{base}, {args.rows} training rows, hyperparameters {hp}, gate limit {after.limit}, "
        f"reps {args.reps}"
    )
    print(f"{'':18} {'wall s':>8} {'cpu s':>8} {'x train (wall)':>15} {'x train (cpu)':>14}")
    for name, values in rows.items():
        wall = statistics.median(w for w, _ in values)
        cpu = statistics.median(c for _, c in values)
        print(f"{name:18} {wall:8.1f} {cpu:8.1f} {wall / train_wall:15.2f} {cpu / train_cpu:14.2f}")
    for name in gates:
        print(f"{name}: {json.dumps(scores[name])}")


if __name__ == "__main__":
    main()
