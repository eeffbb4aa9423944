"""bnr's performance suite: every figure as a ratio measured side by side in one run, with peak memory.

    python benchmarks/run.py [--smoke] [--only P1,P2,P3,P4] [--reps N] [--threads 1] [--device cpu]
                             [--out bench.json]

P1 user fine-tuning step (BnR merged / plain SFT / buffer separate; bnr loop / HF Trainer), P2 merge at
Llama-3-8B shapes (factor space / dense, error, deliverable size; full-model export / peft merge_and_unload),
P3 evaluation throughput (batched / one at a time: generation at batch 16 and 32, judges), P4 `bnr demo` wall
time and every registered defense's cost per user job relative to SFT (training and finalize, and its provider
stages, separately; printed as docs/defenses.md's table too). `--smoke` runs tiny shapes with one repetition in
seconds (the numbers then only show the format). See docs/benchmarks.md, "Performance suite".
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

SECTIONS = ("P1", "P2", "P3", "P4")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="bnr performance suite (ratios measured side by side)")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, one repetition: checks the suite runs")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections (default: all)")
    ap.add_argument("--reps", type=int, default=None, help="interleaved repetitions per figure (default 3, smoke 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: best on shared cores)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (P1/P2 at real shapes: benchmarks/gpu_check.sh)")
    ap.add_argument("--clock", choices=["cpu", "wall"], default=None, help="default: cpu on CPU, wall on CUDA")
    ap.add_argument("--out", default="bench.json", help="where to write the JSON of results")
    return ap.parse_args(argv)


def run_section(name: str, scale: Any, rounds: Any = None) -> tuple[list[Any], dict[str, Any]]:
    """The section's figures, and anything else it reports about itself (P4: where its rounds ran)."""
    if name == "P1":
        import p1_train

        return p1_train.run(scale), {}
    if name == "P2":
        import p2_merge

        return p2_merge.run(scale), {}
    if name == "P3":
        import p3_eval

        return p3_eval.run(scale), {}
    import p4_jobs

    return p4_jobs.run(scale, rounds)


def print_figure(f: Any) -> None:
    target = f"  target {f.target}: {'met' if f.met else 'MISSED'}" if f.target else ""
    secs = ", ".join(f"{k} {v:.4g}s" for k, v in f.seconds.items())
    mem = ", ".join(f"{k} {v:.0f}MiB" for k, v in f.peak_mb.items())
    print(f"{f.id:<42} {f.ratio:>10.4g}  ({f.of}){target}", flush=True)
    if secs or mem:
        print(f"{'':<42} {secs}{'; peak ' + mem if mem else ''}", flush=True)


def markdown(report: dict[str, Any]) -> str:
    """The figures as one Markdown table (written beside the JSON as .md)."""
    rows = ["| figure | ratio | what | target | seconds (medians) | peak MiB |", "|---|---:|---|---|---|---|"]
    for f in report["figures"]:
        target = f"{f['target']} ({'met' if f['met'] else 'missed'})" if f["target"] and f["met"] is not None else ""
        secs = ", ".join(f"{k} {v:.3g}" for k, v in f["seconds"].items())
        mem = ", ".join(f"{k} {v:.0f}" for k, v in f["peak_mb"].items())
        what = f["of"].replace("|", "\\|")
        rows.append(f"| `{f['id']}` | {f['ratio']:.4g} | {what} | {target} | {secs} | {mem} |")
    extra = (
        f"\n### Defenses (docs/defenses.md, cost column from P4)\n\n{report['defenses_table']}"
        if "defenses_table" in report
        else ""
    )
    return "\n".join(rows) + "\n" + extra


def run_sections(only: list[str], scale: Any, report: dict[str, Any], rounds: Any) -> None:
    """Run the sections in order, adding their figures and wall times to `report`; P4 collects `rounds` (its
    defense rounds, running in the background beside the sections before it) or runs them itself."""
    from common import load_average

    for name in only:
        t0 = time.time()
        beside = rounds is not None and name != "P4" and rounds.proc.poll() is None
        print(f"== {name} (load average {load_average()})", flush=True)
        figs, about = run_section(name, scale, rounds if name == "P4" else None)
        if scale.smoke:  # tiny shapes: the numbers only show the format
            for f in figs:
                f.met = None
        for f in figs:
            print_figure(f)
        report["sections"][name] = {"wall_s": round(time.time() - t0, 2), "load_avg_end": load_average(), **about}
        if beside:  # the section ran (at least at its start) beside P4's defense rounds
            report["sections"][name]["beside_p4_rounds"] = True
        report["figures"] += [f.as_dict() for f in figs]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    only = [s.strip().upper() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"bench: error: unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING)
    import common
    import torch
    from common import Scale, load_average, machine

    common.CLOCK["name"] = args.clock or ("wall" if args.device.startswith("cuda") else "cpu")

    torch.set_num_threads(args.threads)
    scale = Scale(smoke=args.smoke, reps=args.reps or (1 if args.smoke else 3), device=args.device)
    started = time.time()
    report: dict[str, Any] = {
        "suite": "bnr-performance",
        "schema": 1,
        "command": " ".join(["python", "benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)]),
        "smoke": scale.smoke,
        "reps": scale.reps,
        "clock": common.CLOCK["name"],
        "machine": machine(args.device),
        "sections": {},
        "figures": [],
    }
    rounds = None
    if "P4" in only and only[0] != "P4":  # P4's defense rounds on the second core while P1-P3 run on one thread
        import p4_jobs

        rounds = p4_jobs.start_rounds(scale, args.threads, common.CLOCK["name"])
        if rounds is not None:
            print("P4's defense rounds run in the background, beside the sections before P4", flush=True)
    try:
        run_sections(only, scale, report, rounds)
    finally:
        if rounds is not None and rounds.proc.poll() is None:  # the suite failed before P4: stop them
            rounds.proc.terminate()
    if "P4" in only:  # docs/defenses.md's table with the measured cost column, ready to paste
        import p4_jobs

        report["defenses_table"] = p4_jobs.defenses_table(report["figures"])
        print("\n" + report["defenses_table"], flush=True)
    report["wall_s"] = round(time.time() - started, 2)
    report["machine"]["load_avg_end"] = load_average()
    bad = [f["id"] for f in report["figures"] if not math.isfinite(f["ratio"])]
    if bad:
        print(f"bench: warning: non-finite ratios {bad}", file=sys.stderr)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    Path(args.out).with_suffix(".md").write_text(markdown(report))
    missed = [f["id"] for f in report["figures"] if f["met"] is False]
    n, wall = len(report["figures"]), report["wall_s"]
    print(f"wrote {args.out}: {n} figures in {wall:.0f} s; targets missed: {missed or 'none'}")
    return report


if __name__ == "__main__":
    main()
