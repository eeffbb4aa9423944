"""docs/attacks.md's tables from a sweep with a `user.attack` axis (`bnr sweep -c toy-attacks`).

    python scripts/attacks_table.py -c toy-attacks [KEY=VALUE ...]

Give the same preset and overrides as the sweep (the script finds its cells through the grid, reading evaluations
and manifests only, no model). Prints, mean +- sample std over seeds:
1. HS per defense (rows) and data attack (columns) as `plain / worst`: plain = the held-out harmful prompts as
   they are; worst = the worst harmful benchmark evaluated on that deliverable (plain, each jailbreak framing,
   the backdoor trigger, the persona) - the attacker's key at inference; and a worst-case column (the largest
   mean worst over the attacks, naming the attack);
2. over-refusal and FA per defense and attack (HS never without them);
3. the inference-time attacks alone: HS per harmful benchmark on the `harmful-mix` deliverables (and the base);
4. the cost: mean user-training wall time per attack (the manifest's; shared UserLoRAs counted once per cell)
   and mean evaluation wall time per cell.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from bnr.artifacts import is_complete, read_manifest
from bnr.config import Config, load_config
from bnr.eval.report import read_summary
from bnr.orchestrate.grid import cell_config, grid
from bnr.recipes import sweep


def _stat(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    return f"{mean:.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{mean:.1f}"


def cell_rows(cfg: Config) -> list[dict[str, Any]]:
    """One row per finished cell: defense, attack, seed, hs, over_refusal, fa, train_s, eval_s, hs per harmful
    benchmark (`by`) and the worst of them (`worst`, `worst_benchmark`)."""
    import bnr.attacks  # noqa: F401  (the attack registry and its config check)

    rows = []
    for cell in grid(cfg):
        ccfg = cell_config(cfg, cell)
        if not is_complete(ccfg.eval.out):
            continue
        row = sweep.cell_row(cfg, cell)
        others = [(k, v) for k, v in cell.extra if k != "user.attack"]
        results = read_summary(ccfg.eval.out)["results"]
        by = {name: float(r["hs"]) for name, r in results.items() if r["metric"] == "hs"}
        worst = max(by, key=lambda k: by[k])
        rows.append(
            {
                # the row: the defense and its other axes (safelora's threshold), never two settings as one mean
                "defense": " ".join([cell.defense, *(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in others)]),
                "attack": ccfg.user.attack,
                "seed": cell.seed,
                **{k: row.get(k) for k in ("hs", "over_refusal", "fa", "train_s")},
                "eval_s": float(read_manifest(ccfg.eval.out).get("wall_time_s") or 0.0),
                "by": by,
                "worst": by[worst],
                "worst_benchmark": worst,
            }
        )
    return rows


def _group(rows: list[dict[str, Any]], defense: str, attack: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["defense"] == defense and r["attack"] == attack]


def _order(rows: list[dict[str, Any]], key: str) -> list[str]:
    return list(dict.fromkeys(r[key] for r in rows))


def hs_table(rows: list[dict[str, Any]]) -> str:
    defenses, attacks = _order(rows, "defense"), _order(rows, "attack")
    head = "| defense | " + " | ".join(f"{a} HS plain / worst" for a in attacks) + " | worst case |"
    lines = [head, "|---|" + "---:|" * (len(attacks) + 1)]
    for d in defenses:
        cells, worst = [], (-1.0, "")
        for a in attacks:
            g = _group(rows, d, a)
            cells.append(f"{_stat([r['hs'] for r in g])} / {_stat([r['worst'] for r in g])}" if g else "-")
            if g and statistics.fmean(r["worst"] for r in g) > worst[0]:
                worst = (statistics.fmean(r["worst"] for r in g), a)
        lines.append(f"| {d} | " + " | ".join(cells) + f" | {worst[0]:.1f} ({worst[1]}) |")
    return "\n".join(lines) + "\n"


def metric_table(rows: list[dict[str, Any]], key: str, title: str) -> str:
    defenses, attacks = _order(rows, "defense"), _order(rows, "attack")
    lines = [f"| defense | {' | '.join(f'{a} {title}' for a in attacks)} |", "|---|" + "---:|" * len(attacks)]
    for d in defenses:
        lines.append(f"| {d} | " + " | ".join(_stat([r[key] for r in _group(rows, d, a)]) for a in attacks) + " |")
    return "\n".join(lines) + "\n"


def inference_table(rows: list[dict[str, Any]], base: dict[str, float] | None, attack: str = "harmful-mix") -> str:
    chosen = [r for r in rows if r["attack"] == attack]
    if not chosen:
        return ""
    benches = list(chosen[0]["by"])
    lines = [f"| deliverable ({attack}) | " + " | ".join(benches) + " |", "|---|" + "---:|" * len(benches)]
    if base:
        lines.append(
            "| base (no fine-tuning) | " + " | ".join(f"{base.get(b, float('nan')):.1f}" for b in benches) + " |"
        )
    for d in _order(chosen, "defense"):
        g = [r for r in chosen if r["defense"] == d]
        lines.append(f"| {d} | " + " | ".join(_stat([r["by"][b] for r in g]) for b in benches) + " |")
    return "\n".join(lines) + "\n"


def cost_table(rows: list[dict[str, Any]]) -> str:
    attacks = _order(rows, "attack")
    lines = ["| attack | cells | user training s (mean ± std) | evaluation s per cell |", "|---|---:|---:|---:|"]
    for a in attacks:
        g = [r for r in rows if r["attack"] == a]
        train = [float(r["train_s"]) for r in g if r.get("train_s") is not None]
        lines.append(f"| {a} | {len(g)} | {_stat(train)} | {_stat([r['eval_s'] for r in g])} |")
    return "\n".join(lines) + "\n"


def base_hs(cfg: Config) -> dict[str, float] | None:
    folder = Path(cfg.sweep.out) / sweep.BASE_DIR / "eval"
    if not is_complete(folder):
        return None
    return {n: float(r["hs"]) for n, r in read_summary(folder)["results"].items() if r["metric"] == "hs"}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--config", required=True)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    import bnr.attacks  # noqa: F401

    cfg = load_config(args.config, args.overrides)
    rows = cell_rows(cfg)
    print(f"{len(rows)} finished cells\n")
    print(hs_table(rows))
    print(metric_table(rows, "over_refusal", "OR"))
    print(metric_table(rows, "fa", "FA"))
    print(inference_table(rows, base_hs(cfg)))
    print(cost_table(rows))


if __name__ == "__main__":
    main()
