"""P4: the README's main command (`bnr demo`) wall time, and every registered defense's cost per user job
relative to plain SFT, on the toy world.

A user job is what the provider runs per user: `bnr finetune` with the defense, then `bnr merge` when the defense's
deliverable merges the ReinforceLoRA. The defense registry is read when the suite runs, so defenses added later
are timed too; a defense that cannot run in this setting is listed with its error instead of a number.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import Figure, Scale, figure, interleaved, medians, peak_memory_mb
from shapes import scratch_dir

from bnr.config import Config, load_config

log = logging.getLogger(__name__)
BASELINE = "none"


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
    return figure(
        "P4.demo.wall_s",
        "`bnr demo` wall time in seconds (README's main command; absolute, so machine-dependent)",
        wall,
        detail={"toy_base_cached_before": cached, "command": "bnr demo out=<tmp>"},
    )


def toy_config(root: Path, model: str, n: int) -> Config:
    fast = "epochs=1,progress=false,log_every=1000"
    items = [f"model.name_or_path={model}", "overwrite=true"]
    for stage in ("buffer", "reinforce", "user"):
        items += [f"{stage}.train.{kv}" for kv in fast.split(",")]
    items += [
        "buffer.n=64",
        f"buffer.out={root / 'buffer'}",
        "reinforce.n_refusal=32",
        "reinforce.n_benign=32",
        f"reinforce.out={root / 'reinforce'}",
        f"reinforce.buffer={root / 'buffer'}",
        f"user.n={n}",
        f"user.buffer={root / 'buffer'}",
        f"merge.reinforce={root / 'reinforce'}",
    ]
    return load_config("toy", items)


def user_job(cfg: Config, defense: str, out: Path) -> None:
    """One user job with `defense`: `finetune` trains the UserLoRA and runs the defense's finalize."""
    from bnr.recipes import finetune

    user = dataclasses.replace(cfg.user, defense=defense, out=str(out / "user"), final_out=str(out / "final"))
    finetune.run(dataclasses.replace(cfg, user=user))


def provider_artifacts(cfg: Config) -> None:
    from bnr.recipes import train_buffer, train_reinforce

    train_buffer.run(cfg)
    train_reinforce.run(cfg)


def tiny_toy_model(root: Path) -> str:
    """A random tiny Llama with the toy world's tokenizer (the smoke run does not build the toy base)."""
    from bnr.tiny import build_tiny_model_dir
    from bnr.toy.world import all_texts

    return str(build_tiny_model_dir(root / "tiny-toy", all_texts(), hidden=32, layers=2, heads=4, intermediate=64))


def defense_figures(scale: Scale, root: Path) -> list[Figure]:
    from bnr.defenses import DEFENSES

    model = tiny_toy_model(root) if scale.smoke else "builtin:toy"
    cfg = toy_config(root, model, 16 if scale.smoke else 128)
    provider_artifacts(cfg)
    names = DEFENSES.names()
    failed: dict[str, str] = {}
    runnable = []
    mem: dict[str, float] = {}
    for d in names:  # one untimed run each: warm-up and peak memory, and find those that cannot run here
        try:
            mem[d] = peak_memory_mb(functools.partial(user_job, cfg, d, root / "jobs" / d))[0]
            runnable.append(d)
        except Exception as e:
            failed[d] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}" if str(e) else type(e).__name__
            log.warning("defense %s not timed: %s", d, failed[d])
    if BASELINE not in runnable:
        raise RuntimeError(f"the SFT baseline {BASELINE!r} did not run: {failed.get(BASELINE)}")
    jobs = {d: functools.partial(user_job, cfg, d, root / "jobs" / d) for d in runnable}
    t = medians(interleaved(jobs, scale.reps, warmup=0))
    figs = []
    for d in runnable:
        figs.append(
            figure(
                f"P4.defense.{d}",
                f"user job (finetune + merge if any) time: {d} / plain SFT ({BASELINE})",
                t[d] / t[BASELINE],
                seconds={d: t[d], BASELINE: t[BASELINE]},
                peak_mb={d: mem[d]},
                detail={
                    "doc": DEFENSES.describe().get(d, ""),
                    "user_n": cfg.user.n,
                    "epochs": cfg.user.train.epochs,
                    "model": model if not scale.smoke else "tiny random Llama, toy tokenizer",
                    **({"not_timed": failed} if d == BASELINE and failed else {}),
                },
            )
        )
    return figs


def run(scale: Scale) -> list[Figure]:
    root = scratch_dir("p4")
    try:
        figs = [] if scale.smoke else [demo_figure(root / "demo")]
        return figs + defense_figures(scale, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
