"""`bnr demo`: the whole story on the toy world, on a CPU, in minutes.

Builds (or loads) the aligned toy base, trains BufferLoRA and ReinforceLoRA once, then for every harmful ratio
p and seed trains two UserLoRAs - plain SFT, and with the buffer merged and frozen - and evaluates:

- `sft`: the plain SFT UserLoRA (the undefended baseline);
- `buffer-only`: the buffer-trained UserLoRA alone at the merge scale (buffer removed, no ReinforceLoRA);
- `bnr`: Buffer-and-Reinforce, the buffer-trained UserLoRA QR-merged with ReinforceLoRA;
- `reinforce-no-buffer`: the ablation without buffer: the SFT UserLoRA QR-merged with ReinforceLoRA.
Merged methods are evaluated at every `toy.scales` (the paper's code uses 0.5). Every stage is the project's
own recipe (train_buffer, train_reinforce, finetune, merge) writing its ordinary run directory under `out`.
Writes `results.json`, `table.md`, `demo.png` and per-sample JSONL of every evaluation under `evals/`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnr.artifacts import atomic_write_json, atomic_write_text
from bnr.config import Config, DataConfig, to_dict
from bnr.errors import BnrError
from bnr.eval.tables import stat
from bnr.progress import track

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Method:
    label: str
    user: str  # which UserLoRA: "sft" (trained on the plain base) or "buffer" (trained with the buffer merged)
    merge: str | None  # merge method applied with ReinforceLoRA (None: the UserLoRA as trained)


METHODS = {
    "sft": Method("SFT", "sft", None),
    "buffer-only": Method("BufferLoRA only", "buffer", "none"),
    "bnr": Method("BnR", "buffer", "qr"),
    "reinforce-no-buffer": Method("Reinforce, no buffer", "sft", "qr"),
}
USER_DEFENSE = {"sft": "sft", "buffer": "bnr-buffer-only"}


def run(cfg: Config) -> Path:
    import torch

    from bnr.toy.base import toy_base_path

    torch.set_num_threads(max(1, cfg.toy.threads))
    started = time.time()
    toy = cfg.toy
    unknown = [m for m in toy.methods if m not in METHODS]
    if unknown or not toy.methods:
        raise BnrError(f"unknown toy.methods {unknown}; valid: {', '.join(METHODS)}")
    if cfg.template != toy.base.template:
        raise BnrError(f"template={cfg.template!r} differs from the toy base's {toy.base.template!r}; use the same")
    out = Path(toy.out)
    out.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}
    t = time.time()
    base = toy_base_path(toy, progress=_progress(cfg))
    timing["base"] = time.time() - t
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, name_or_path=str(base)),
        overwrite=True,
        resume=False,
        user=dataclasses.replace(cfg.user, benign_data=DataConfig(source="toy", path=f"benign_{toy.task}")),
    )
    cells, buffer_dir, reinforce_dir = _run_grid(cfg, out, timing)
    rows = aggregate(cells)
    wall = time.time() - started
    results = {
        "rows": rows,
        "cells": cells,
        "task": toy.task,
        "base_model": str(base),
        "wall_time_s": round(wall, 1),
        "timing_s": {k: round(v, 1) for k, v in timing.items()},
        "threads": toy.threads,
        "runs": {"buffer": str(buffer_dir), "reinforce": str(reinforce_dir)},
        "config": to_dict(cfg),
    }
    atomic_write_json(out / "results.json", results)
    table = format_table(rows, toy.task)
    atomic_write_text(out / "table.md", table + f"\nwall time: {wall:.0f} s ({toy.threads} threads)\n")
    if toy.plot:
        plot(rows, out / "demo.png", toy.task)
    print(table)
    plotted = f", plot in {out}/demo.png" if toy.plot else ""
    print(f"\nwall time {wall:.0f} s; results in {out}/results.json{plotted}")
    return out


def _progress(cfg: Config) -> bool:
    return cfg.user.train.progress


def _run_grid(cfg: Config, out: Path, timing: dict[str, float]) -> tuple[list[dict[str, Any]], Path, Path]:
    from bnr.recipes import finetune, train_buffer, train_reinforce

    toy = cfg.toy
    methods = [METHODS[m] for m in toy.methods]
    buffer_dir, reinforce_dir = out / "buffer", out / "reinforce"
    t = time.time()
    if any(m.user == "buffer" or m.merge is not None for m in methods):
        buffer_dir = train_buffer.run(
            dataclasses.replace(cfg, buffer=dataclasses.replace(cfg.buffer, out=str(buffer_dir)))
        )
    timing["buffer"] = time.time() - t
    t = time.time()
    if any(m.merge == "qr" for m in methods):
        reinforce_dir = train_reinforce.run(
            dataclasses.replace(
                cfg, reinforce=dataclasses.replace(cfg.reinforce, buffer=str(buffer_dir), out=str(reinforce_dir))
            )
        )
    timing["reinforce"] = time.time() - t
    timing["user"] = timing["merge"] = timing["eval"] = 0.0
    t = time.time()
    base_scores = evaluate_dir(cfg, None, out / "evals" / "base")
    timing["eval"] += time.time() - t
    cells = [{"method": "base", "label": "aligned base", "p": None, "seed": None, "scale": None, **base_scores}]
    users_needed = sorted({m.user for m in methods})
    grid = [(p, s) for p in toy.ps for s in toy.seeds]
    for p, seed in track(grid, "demo (p, seed)", unit="cell", enabled=_progress(cfg)):
        tag = f"p{p:g}-s{seed}"
        users = {}
        for kind in users_needed:
            t = time.time()
            user_cfg = dataclasses.replace(
                cfg,
                seed=seed,
                user=dataclasses.replace(
                    cfg.user,
                    defense=USER_DEFENSE[kind],
                    buffer=str(buffer_dir),
                    p=p,
                    out=str(out / "user" / f"{kind}-{tag}"),
                ),
            )
            users[kind] = finetune.train_user(finetune.make_job(user_cfg))
            timing["user"] += time.time() - t
        for name in toy.methods:
            m = METHODS[name]
            for scale in [None] if m.merge is None else toy.scales:
                t = time.time()
                adapter = users[m.user]
                if m.merge is not None and scale is not None:
                    adapter = merged(
                        cfg, adapter, reinforce_dir, m.merge, scale, out / "merged" / f"{name}-x{scale:g}-{tag}"
                    )
                timing["merge"] += time.time() - t
                t = time.time()
                where = out / "evals" / (f"{name}-{tag}" if scale is None else f"{name}-x{scale:g}-{tag}")
                scores = evaluate_dir(cfg, adapter, where)
                timing["eval"] += time.time() - t
                cells.append({"method": name, "label": m.label, "p": p, "seed": seed, "scale": scale, **scores})
    return cells, buffer_dir, reinforce_dir


def merged(cfg: Config, user_dir: Path, reinforce_dir: Path, method: str, scale: float, out: Path) -> Path:
    """The `merge` recipe on (UserLoRA, ReinforceLoRA) with `method` and `scale` (alpha and tau from cfg.merge)."""
    from bnr.recipes import merge

    mcfg = dataclasses.replace(
        cfg.merge,
        user=str(user_dir),
        reinforce=str(reinforce_dir),
        method=method,
        scale=scale,
        full_model=False,
        out=str(out),
    )
    return merge.run(dataclasses.replace(cfg, merge=mcfg))


def evaluate_dir(cfg: Config, adapter_dir: Path | None, out: Path) -> dict[str, float]:
    """Load the base (plus an adapter folded into its weights), run the toy benchmarks, write per-sample JSONL."""
    from bnr import adapters
    from bnr.models import load_model_and_tokenizer
    from bnr.toy.evaluate import evaluate

    model, tokenizer = load_model_and_tokenizer(cfg.model)
    if adapter_dir is not None:
        model = adapters.attach_frozen(model, adapter_dir, adapters.USER, "merged")
    scores = evaluate(model, tokenizer, [cfg.toy.task], template=cfg.template, batch_size=cfg.toy.eval_batch_size)
    out.mkdir(parents=True, exist_ok=True)
    for res in scores.results:
        atomic_write_text(
            out / f"{res.benchmark}.jsonl", "".join(json.dumps(s, default=str) + "\n" for s in res.samples)
        )
        atomic_write_json(out / f"{res.benchmark}.json", res.summary())
    row = scores.row()
    return {"hs": row["hs"], "or": row["or"], "fa": row[f"fa_{cfg.toy.task}"]}


def aggregate(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean +- std (sample std) over seeds for each (method, scale, p), in first-seen order."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["method"], c["scale"], c["p"]), []).append(c)
    rows = []
    for (method, scale, p), cs in groups.items():
        row: dict[str, Any] = {"method": method, "label": cs[0]["label"], "p": p, "scale": scale}
        for k in ("hs", "fa", "or"):
            st = stat([c[k] for c in cs])
            row[f"{k}_mean"], row[f"{k}_std"] = round(st.mean, 2), round(st.std, 2)
        row["seeds"] = [c["seed"] for c in cs]
        rows.append(row)
    return rows


def _label(row: dict[str, Any]) -> str:
    return row["label"] + ("" if row["scale"] is None else f" (scale {row['scale']:g})")


def format_table(rows: list[dict[str, Any]], task: str) -> str:
    """A markdown table: HS, FA and over-refusal (%, mean +- std over seeds) per method, scale and p."""
    lines = [
        f"| method | p | HS (%) lower is safer | FA {task} (%) | over-refusal (%) | seeds |",
        "|---|---|---|---|---|---|",
    ]
    ordered = [r for r in rows if r["p"] is None] + sorted(
        (r for r in rows if r["p"] is not None),
        key=lambda r: (r["p"], list(METHODS).index(r["method"]), r["scale"] or 0),
    )
    for r in ordered:
        cells = [f"{r[f'{k}_mean']:.1f} ± {r[f'{k}_std']:.1f}" for k in ("hs", "fa", "or")]
        p = "-" if r["p"] is None else f"{r['p']:g}"
        seeds = "-" if r["p"] is None else ",".join(str(s) for s in r["seeds"])
        lines.append(f"| {_label(r)} | {p} | {' | '.join(cells)} | {seeds} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, task: str) -> None:
    """Grouped bars of HS, FA and over-refusal per p (one bar per method and scale); error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = next((r for r in rows if r["p"] is None), None)
    grid = [r for r in rows if r["p"] is not None]
    ps = sorted({r["p"] for r in grid})
    series = list(dict.fromkeys(_label(r) for r in grid))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), dpi=80)
    width = 0.8 / max(1, len(series))
    panels = (("hs", "HS (%) - lower is safer"), ("fa", f"FA {task} (%)"), ("or", "over-refusal (%)"))
    for ax, (key, title) in zip(axes, panels):
        for i, name in enumerate(series):
            vals = [next((r for r in grid if _label(r) == name and r["p"] == p), None) for p in ps]
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(ps))]
            means = [v[f"{key}_mean"] if v else 0 for v in vals]
            stds = [v[f"{key}_std"] if v else 0 for v in vals]
            ax.bar(xs, means, width, yerr=stds, label=name, capsize=2)
        if base is not None:
            ax.axhline(base[f"{key}_mean"], color="k", ls="--", lw=1, label="aligned base")
        ax.set_xticks(range(len(ps)), [f"p = {p:g}" for p in ps])
        ax.set_ylim(0, 105)
        ax.set_title(title, fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
