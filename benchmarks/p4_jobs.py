"""P4: the README's main command (`bnr demo`) wall time, and each defense's extra cost per user job relative to
plain SFT, on the toy world, every candidate timed side by side in this process.

A user job is what the provider runs per user: hooks 1-3 (`userjob.train_user`: data, model, the training loop)
and hook 4 (`userjob.finalize`: merge, project, prune, perturb; nothing for SFT). Both phases are timed
separately, in interleaved rounds over every defense (the order alternates each round, SFT at both ends;
medians compared; a job over `LONG_JOB` x SFT's is timed in the first round only). The
provider stages a defense declares (buffer, reinforce, security vector, alignment direction) are built once per
base model, not per job: each is timed once, before the rounds. Every ratio is over SFT's whole user job:

- `P4.defense.<name>`: (train + finalize) / SFT's job (1.0 = no extra cost);
- `P4.defense.<name>.finalize`: finalize / SFT's job, for defenses with a finalize hook (the share of the above);
- `P4.defense.<name>.provider`: the defense's provider stages / SFT's job (a one-off cost per base model).

The registry is read when the suite runs (canonical names, aliases once), so defenses added later are timed too;
one that cannot run in this setting is listed under the SFT figure's `not_timed` with its error.
`defenses_table` prints docs/defenses.md's table with its cost column filled from these figures.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import Figure, Scale, figure, median, now, peak_memory_mb
from shapes import scratch_dir

from bnr.config import Config, load_config

log = logging.getLogger(__name__)
BASELINE = "sft"
COST_COLUMN = "extra cost per user job vs SFT"
DOCS_TABLE = Path(__file__).resolve().parents[1] / "docs" / "defenses.md"
FULL_N, SMOKE_N = 128, 16
LONG_JOB = 3.0  # x SFT's job: timed in one round only (far above the noise; it would dominate the wall time)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class Background:
    """P4's defense rounds running in a background process (`start_rounds`), its figures written to `out`."""

    proc: subprocess.Popen[bytes]
    log: Path
    out: Path
    started: float


def start_rounds(scale: Scale, threads: int, clock: str) -> Background | None:
    """Start P4's defense rounds (`defense_figures`: building a fresh cache's unaligned toy base first) in a
    background process, so that they run on the second core while P1-P3 measure on one torch thread, and
    `bnr demo` later has both cores to itself; None on one core or CUDA (then P4 runs them itself). Their
    figures are ratios of CPU times of one-thread jobs, like P1-P3's, which a second one-thread process beside
    them disturbs little (docs/benchmarks.md)."""
    if scale.cuda or usable_cores() < 2:
        return None
    out = Path(tempfile.mkstemp(prefix="bnr-bench-p4-rounds-", suffix=".json")[1])
    log_file = out.with_suffix(".log")
    cmd = [sys.executable, __file__, "--rounds", str(out), "--reps", str(scale.reps), "--threads", str(threads)]
    cmd += ["--clock", clock, *(["--smoke"] if scale.smoke else [])]
    with log_file.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    return Background(proc, log_file, out, time.perf_counter())


def finish_rounds(bg: Background) -> tuple[list[Figure], dict[str, Any]]:
    """Wait for `start_rounds`'s process: its figures, and what it did (its wall seconds, how long P4 waited)."""
    waited = time.perf_counter()
    rc = bg.proc.wait()
    end = time.perf_counter()
    info: dict[str, Any] = {"rounds_wall_s": round(end - bg.started, 2), "waited_s": round(end - waited, 2)}
    try:
        if rc != 0:
            tail = bg.log.read_text(errors="replace").strip()[-400:]
            raise RuntimeError(f"P4's defense rounds failed ({rc}): {tail}")
        return [Figure(**f) for f in json.loads(bg.out.read_text())], info
    finally:
        bg.log.unlink(missing_ok=True)
        bg.out.unlink(missing_ok=True)


def demo_figure(root: Path) -> Figure:
    """`bnr demo` once, in a fresh process (the toy base is built first if it is not cached)."""
    from bnr.errors import BnrError
    from bnr.toy.base import toy_base_path

    try:
        toy_base_path(build=False)
        cached = True
    except BnrError:
        cached = False
    cmd = [sys.executable, "-c", "import sys; from bnr.cli import main; sys.exit(main())", "demo", f"out={root}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"bnr demo failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    results = json.loads((root / "results.json").read_text())
    detail = {"toy_base_cached_before": cached, "command": "bnr demo out=<tmp>", **demo_digests(root)}
    return figure(
        "P4.demo.wall_s",
        "`bnr demo` wall time in seconds (README's main command; absolute, so machine-dependent)",
        wall,
        seconds={f"demo {k}": float(v) for k, v in results.get("timing_s", {}).items()},
        detail=detail,
    )


def _without_timings(node: Any) -> Any:
    """`node` without wall-time fields (`*_s`, `*_s_mean`, `*_s_std`) and run-folder paths (`eval`)."""
    if isinstance(node, dict):
        drop = {k for k in node if k == "eval" or k.endswith(("_s", "_s_mean", "_s_std"))}
        return {k: _without_timings(v) for k, v in node.items() if k not in drop}
    if isinstance(node, list):
        return [_without_timings(v) for v in node]
    return node


def _table_without_timings(text: str) -> str:
    """A Markdown text whose tables lose their wall-time columns (header cell containing "user job s")."""
    lines, keep = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            keep = None
            lines.append(line)
            continue
        cells = line.split("|")
        if keep is None:  # a table's header row
            keep = [i for i, c in enumerate(cells) if "user job s" not in c]
        lines.append("|".join(cells[i] for i in keep if i < len(cells)))
    return "\n".join(lines)


def demo_digests(out: Path) -> dict[str, str]:
    """sha256 of what a `bnr demo` folder computed, without its timings, to compare runs bit for bit:
    `results.json`'s rows, cells and base row (no wall times, no paths) and `table.md` without its wall-time
    columns ("user job s")."""
    import hashlib

    results = json.loads((out / "results.json").read_text())
    numbers = _without_timings({k: results.get(k) for k in ("rows", "cells", "base")})
    digests = {"results_digest": hashlib.sha256(json.dumps(numbers, sort_keys=True).encode()).hexdigest()}
    table = out / "table.md"
    if table.is_file():
        digests["table_digest"] = hashlib.sha256(_table_without_timings(table.read_text()).encode()).hexdigest()
    return digests


def toy_config(root: Path, models: tuple[str, str], smoke: bool) -> Config:
    """The toy preset with bnr-calibrated's search settings (toy-calibrate); one epoch per stage; a user job
    of n samples (p = 0.1). Provider stages on half the preset's data sets (tiny ones in the smoke run)."""
    items = [
        f"model.name_or_path={models[0]}",
        f"model.unaligned={models[1]}",
        "overwrite=true",
        "eval.progress=false",
    ]
    for stage in ("buffer", "reinforce", "user"):
        items += [f"{stage}.train.epochs=1", f"{stage}.train.progress=false", f"{stage}.train.log_every=1000"]
    items.append(f"user.n={SMOKE_N if smoke else FULL_N}")
    if not smoke:  # half the preset's provider sets (each stage is a one-off cost; keeps the suite in 10 minutes)
        items += ["buffer.n=300", "reinforce.n_refusal=300", "reinforce.n_benign=300"]
        items.append("defenses.security-vectors.n_benign=300")
    if smoke:  # batch 4: a few real steps (one warm-up step of lr 0 would leave every LoRA at its init)
        items += [f"{stage}.train.batch_size=4" for stage in ("buffer", "reinforce", "user")]
        items += [
            "buffer.n=16",
            "reinforce.n_refusal=8",
            "reinforce.n_benign=8",
            "defenses.security-vectors.n_benign=8",
        ]
        items += [
            "calibrate.n_harmful=8",
            "calibrate.n_benign=8",
            "calibrate.fa_n=8",
            "calibrate.screen_fraction=null",
        ]
        items += ["calibrate.user_scales=[1.0]", "calibrate.reinforce_scales=[0.5]", "calibrate.alphas=[0.1]"]
        items += ["calibrate.layers=[null]", "calibrate.plot=false", "eval.max_new_tokens=4"]
    return load_config("toy-calibrate", items)


def tiny_toy_models(root: Path) -> tuple[str, str]:
    """Two random tiny Llamas with the toy world's tokenizer (aligned, unaligned): the smoke run builds no toy base."""
    from bnr.tiny import build_tiny_model_dir
    from bnr.toy.world import all_texts

    shape = dict(hidden=32, layers=2, heads=4, intermediate=64)
    aligned = build_tiny_model_dir(root / "tiny-toy", all_texts(), **shape)
    unaligned = build_tiny_model_dir(root / "tiny-toy-unaligned", all_texts(), seed=1, **shape)
    return str(aligned), str(unaligned)


def build_providers(cfg: Config, names: list[str], root: Path) -> tuple[Config, dict[str, float], dict[str, str]]:
    """Build every provider stage in `names` (parents first), each timed once; returns the config pointing at
    them, the seconds per stage and the stages that failed (with their errors)."""
    from bnr.orchestrate import providers
    from bnr.runs.providers import closure

    seconds: dict[str, float] = {}
    failed: dict[str, str] = {}
    for name in closure(tuple(names)):
        t0 = now()
        try:
            cfg = providers.build_providers(cfg, (name,), lambda n, key: root / f"{n}-{key}")
            seconds[name] = now() - t0
        except Exception as e:  # a stage that cannot run here: its defenses are reported as not timed
            failed[name] = _why(e)
    return cfg, seconds, failed


def _why(e: BaseException) -> str:
    text = str(e).splitlines()[0][:200] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def job_phases(cfg: Config, defense: str, out: Path) -> dict[str, float]:
    """One user job with `defense`: seconds of hooks 1-3 (`train`) and of hook 4 (`finalize`)."""
    from bnr.orchestrate import userjob

    user = dataclasses.replace(cfg.user, defense=defense, out=str(out / "user"), final_out=str(out / "final"))
    job = userjob.make_job(dataclasses.replace(cfg, user=user))
    gc.collect()
    t0 = now()
    run = userjob.train_user(job)
    t1 = now()
    userjob.finalize(job, run)
    return {"train": t1 - t0, "finalize": now() - t1}


def defense_names() -> list[str]:
    """Every registered defense once (canonical names), the SFT baseline first."""
    from bnr.defenses import DEFENSES, canonical_name

    names = sorted({canonical_name(n) for n in DEFENSES.names()})
    return [BASELINE, *(n for n in names if n != BASELINE)]


def _job_s(times: dict[str, list[float]]) -> float:
    return times["train"][-1] + times["finalize"][-1]


def timed_rounds(cfg: Config, names: list[str], reps: int, root: Path) -> tuple[dict, dict[str, float], dict]:
    """`reps` interleaved rounds of every defense's job, after one untimed SFT job (imports, caches). SFT runs
    at both ends of every round (two samples per round, neither position favoured); the first round also
    measures each job's peak memory. A job over `LONG_JOB` times SFT's in the first round is far above the
    noise and is timed in that round only (it would dominate the suite's wall time). Returns phase times,
    peak MiB and the defenses that failed."""
    job_phases(cfg, BASELINE, root / "warmup")
    times: dict[str, dict[str, list[float]]] = {d: {"train": [], "finalize": []} for d in names}
    mem: dict[str, float] = {}
    failed: dict[str, str] = {}
    once: set[str] = set()
    others = [d for d in names if d != BASELINE]
    for rep in range(reps):
        for d in [BASELINE, *(others if rep % 2 == 0 else reversed(others)), BASELINE]:
            if d in failed or d in once:
                continue
            got: dict[str, float] = {}
            try:
                run = functools.partial(lambda d, into: into.update(job_phases(cfg, d, root / d)), d, got)
                if rep == 0 and d not in mem:
                    mem[d] = peak_memory_mb(run)[0]
                else:
                    run()
            except Exception as e:  # a defense that cannot run in this setting is reported, not fatal
                failed[d] = _why(e)
                log.warning("defense %s not timed: %s", d, failed[d])
                continue
            for phase, sec in got.items():
                times[d][phase].append(sec)
            if rep == 0 and d != BASELINE and _job_s(times[d]) > LONG_JOB * _job_s(times[BASELINE]):
                once.add(d)
    return times, mem, failed


def defense_figures(scale: Scale, root: Path) -> list[Figure]:
    from bnr.defenses import DEFENSES, get_defense
    from bnr.defenses.base import Defense
    from bnr.runs.providers import closure

    models = tiny_toy_models(root) if scale.smoke else ("builtin:toy", "builtin:toy-unaligned")
    cfg = toy_config(root, models, scale.smoke)
    names = defense_names()
    needed = sorted({p for d in names for p in get_defense(d).requires})
    cfg, provider_s, provider_failed = build_providers(cfg, needed, root / "providers")
    failed = {
        d: f"provider stage {p} failed: {provider_failed[p]}"
        for d in names
        for p in closure(get_defense(d).requires)
        if p in provider_failed
    }
    runnable = [d for d in names if d not in failed]
    # two rounds fewer than the other sections (one by default): these ratios carry no target, SFT runs at both
    # ends of every round, and the rounds are most of the suite's time after `bnr demo`
    times, mem, job_failed = timed_rounds(cfg, runnable, max(1, scale.reps - 2), root / "jobs")
    failed |= job_failed
    if BASELINE in failed:
        raise RuntimeError(f"the SFT baseline {BASELINE!r} did not run: {failed[BASELINE]}")
    med = {d: {k: median(v) for k, v in times[d].items()} for d in runnable if d not in failed}
    sft_job = med[BASELINE]["train"] + med[BASELINE]["finalize"]
    common_detail = {
        "user_n": cfg.user.n,
        "epochs": cfg.user.train.epochs,
        "model": "tiny random Llama, toy tokenizer" if scale.smoke else models[0],
        "clock": "the suite's (--clock)",
    }
    figs = []
    for d, m in med.items():
        defense = get_defense(d)
        job = m["train"] + m["finalize"]
        has_final = type(defense).finalize is not Defense.finalize
        stages_s = {p: provider_s[p] for p in closure(defense.requires)}
        detail = {
            "doc": DEFENSES.describe().get(d, ""),
            "rounds": len(times[d]["train"]),
            "train_ratio": m["train"] / sft_job,
            **common_detail,
            **({"not_timed": failed} if d == BASELINE and failed else {}),
        }
        secs = {"train": m["train"], "finalize": m["finalize"], "sft job": sft_job}
        of = f"user job (train + finalize) time: {d} / plain SFT ({BASELINE})"
        figs.append(figure(f"P4.defense.{d}", of, job / sft_job, seconds=secs, peak_mb={d: mem[d]}, detail=detail))
        if has_final:
            of = f"finalize (hook 4) time of {d} / SFT's whole user job"
            figs.append(
                figure(f"P4.defense.{d}.finalize", of, m["finalize"] / sft_job, seconds={"finalize": m["finalize"]})
            )
        if stages_s:
            of = f"provider stages of {d} ({', '.join(stages_s)}; once per base model) / SFT's user job"
            total = sum(stages_s.values())
            figs.append(figure(f"P4.defense.{d}.provider", of, total / sft_job, seconds=stages_s))
    return figs


def cost_text(figs: dict[str, dict[str, Any]], name: str) -> str:
    """The cost cell of one defense: job ratio (train + finalize shares) and its provider stages."""
    job = figs.get(f"P4.defense.{name}")
    if job is None:
        return "not timed"
    if name == BASELINE:
        return "1.00x (the reference)"
    text = f"{job['ratio']:.2f}x"
    final = figs.get(f"P4.defense.{name}.finalize")
    if final is not None:
        text += f" (train {job['detail']['train_ratio']:.2f}x + finalize {final['ratio']:.2f}x)"
    provider = figs.get(f"P4.defense.{name}.provider")
    if provider is not None:
        text += f"; provider stages {provider['ratio']:.1f}x, once per base"
    return text


def _row_name(first_cell: str) -> str | None:
    start = first_cell.find("`")
    end = first_cell.find("`", start + 1)
    return first_cell[start + 1 : end] if start >= 0 and end > start else None


def defenses_table(figures: list[dict[str, Any]], docs: Path = DOCS_TABLE) -> str:
    """docs/defenses.md's defense table with its cost column filled from the P4 figures (ratios over SFT's
    user job); without that file, a two-column table of the same rows."""
    figs = {f["id"]: f for f in figures}
    names = [i.removeprefix("P4.defense.") for i in figs if i.startswith("P4.defense.") and i.count(".") == 2]
    lines = docs.read_text().splitlines() if docs.is_file() else []
    head = next((i for i, line in enumerate(lines) if COST_COLUMN in line and line.startswith("|")), None)
    if head is None:
        rows = [f"| `{n}` | {cost_text(figs, n)} |" for n in names]
        return "\n".join([f"| defense | {COST_COLUMN} |", "|---|---|", *rows]) + "\n"
    cells = [c.strip() for c in lines[head].strip().strip("|").split("|")]
    col = cells.index(COST_COLUMN)
    out, listed = lines[head : head + 2], set()
    for line in lines[head + 2 :]:
        if not line.startswith("|"):
            break
        row = [c.strip() for c in line.strip().strip("|").split("|")]
        name = _row_name(row[0])
        if name is not None and len(row) == len(cells):
            row[col] = cost_text(figs, name)
            listed.add(name)
        out.append("| " + " | ".join(row) + " |")
    for name in (n for n in names if n not in listed):  # registered after the docs were written: add its row
        row = [f"`{name}`", *("?" for _ in cells[1:])]
        row[col] = cost_text(figs, name)
        out.append("| " + " | ".join(row) + " |")
    return "\n".join(out) + "\n"


@contextmanager
def scratch() -> Iterator[Path]:
    """A scratch folder, with the buffer registry pointed into it: the suite's buffers never enter the user's."""
    from bnr.guard import REGISTRY_ENV

    root = scratch_dir("p4")
    before = os.environ.get(REGISTRY_ENV)
    os.environ[REGISTRY_ENV] = str(root / "buffer-registry")
    try:
        yield root
    finally:
        if before is None:
            os.environ.pop(REGISTRY_ENV, None)
        else:
            os.environ[REGISTRY_ENV] = before
        shutil.rmtree(root, ignore_errors=True)


def run(scale: Scale, rounds: Background | None = None) -> tuple[list[Figure], dict[str, Any]]:
    """`bnr demo`'s figure and the defense rounds' (from `rounds` when they ran in the background: waited for
    first, so that the demo runs alone), and where the rounds ran."""
    with scratch() as root:
        info: dict[str, Any] = {"background": rounds is not None}
        if rounds is not None:
            defenses, waited = finish_rounds(rounds)
            info |= waited
        figs = [] if scale.smoke else [demo_figure(root / "demo")]
        if rounds is None:
            defenses = defense_figures(scale, root)
        return figs + defenses, info


def main(argv: list[str] | None = None) -> None:
    """`python benchmarks/p4_jobs.py DEMO_OUT`: the digests of a finished `bnr demo` folder;
    `--rounds OUT`: the defense rounds alone, their figures written to OUT (what `start_rounds` runs)."""
    import argparse

    import common
    import torch

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("demo_out", nargs="?")
    ap.add_argument("--rounds", default=None)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    args = ap.parse_args(argv)
    if args.rounds is None:
        print(json.dumps(demo_digests(Path(args.demo_out)), indent=2))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING)
    common.CLOCK["name"] = args.clock
    torch.set_num_threads(args.threads)
    with scratch() as root:
        figs = defense_figures(Scale(smoke=args.smoke, reps=args.reps), root)
    Path(args.rounds).write_text(json.dumps([f.as_dict() for f in figs]) + "\n")


if __name__ == "__main__":
    main()
