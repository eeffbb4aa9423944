"""Published jailbreak prompt sets as named dataset sources: `strongreject`, `harmbench`, `jailbreakbench`.

No package on PyPI ships these prompts for offline use (`jailbreakbench` 1.0.0 downloads them from the hub at run
time; `strong-reject` and `harmbench` are not on PyPI), so the user supplies the published file with `path=` and
the loader reads its format, offline. The header rows below were checked against the published files (see
"Checked against" in docs/benchmarks.md for the file and commit of each); the tests read fixtures with exactly
these headers and invented rows:

- StrongREJECT: `strongreject_dataset/strongreject_dataset.csv` (or `strongreject_small_dataset.csv`) of the
  StrongREJECT repository, header `category,source,forbidden_prompt`;
- HarmBench: `data/behavior_datasets/harmbench_behaviors_text_all.csv` (or `_test` / `_val`), header
  `Behavior,FunctionalCategory,SemanticCategory,Tags,ContextString,BehaviorID`. Its functional categories are
  `standard`, `contextual` (the prompt is the context, a `---` line and the behavior, as HarmBench builds it) and
  `copyright` (asks for song lyrics or book passages, which HarmBench scores by hashing against the originals, not
  with a harm judge); `subset=` picks one, and by default the standard and contextual ones are read;
- JailbreakBench: JBB-Behaviors' `data/harmful-behaviors.csv` or `data/benign-behaviors.csv`, header
  `Index,Goal,Target,Behavior,Category,Source` (the prompt is `Goal`); `subset=benign` labels the benign file's
  rows `benign`.

Records are prompts (no output): `label` harmful (or benign), `category` the set's category, `source` the set.
"""

from __future__ import annotations

import logging
from typing import Any

from bnr.config import DataConfig
from bnr.data.files import read_rows
from bnr.data.records import Record
from bnr.data.sources import SOURCES, _fixed_columns, _require
from bnr.errors import BnrError

log = logging.getLogger(__name__)
FILES = {
    "strongreject": "strongreject_dataset.csv from the StrongREJECT repository (alexandrasouly/strongreject)",
    "harmbench": "harmbench_behaviors_text_all.csv from the HarmBench repository (centerforaisafety/HarmBench)",
    "jailbreakbench": "harmful-behaviors.csv of JailbreakBench/JBB-Behaviors",
}


def _rows(cfg: DataConfig, name: str, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    _fixed_columns(cfg)
    if not cfg.path:
        raise BnrError(f"dataset source {name!r} reads a local copy of the published file: give path=<{FILES[name]}>")
    rows = read_rows(cfg.path)[0]
    _require(rows, columns, f"{name} file {cfg.path}")
    return rows


@SOURCES.register("strongreject")
def _strongreject(cfg: DataConfig) -> list[Record]:
    """StrongREJECT forbidden prompts from path=<strongreject_dataset.csv> (category, source, forbidden_prompt)."""
    rows = _rows(cfg, "strongreject", ("category", "forbidden_prompt"))
    return [
        Record(
            id=f"strongreject-{i:04d}",
            instruction=r["forbidden_prompt"],
            label="harmful",
            source="strongreject",
            category=r["category"] or None,
        )
        for i, r in enumerate(rows)
    ]


HARMBENCH_KINDS = ("standard", "contextual", "copyright")


@SOURCES.register("harmbench")
def _harmbench(cfg: DataConfig) -> list[Record]:
    """HarmBench text behaviors from path=<harmbench_behaviors_text_*.csv>: the standard and contextual ones
    (contextual ones carry their context), or subset=standard|contextual|copyright."""
    kinds = (cfg.subset,) if cfg.subset else HARMBENCH_KINDS[:2]
    if cfg.subset not in (None, *HARMBENCH_KINDS):
        raise BnrError(
            f"harmbench subset={cfg.subset!r} is not a HarmBench functional category; use one of "
            f"{', '.join(HARMBENCH_KINDS)} or drop it (standard and contextual)"
        )
    rows = _rows(cfg, "harmbench", ("Behavior", "FunctionalCategory", "SemanticCategory", "BehaviorID"))
    out = []
    for r in rows:
        if r["FunctionalCategory"] not in kinds:
            continue
        context = (r.get("ContextString") or "").strip()
        prompt = f"{context}\n\n---\n\n{r['Behavior']}" if context else r["Behavior"]
        out.append(
            Record(
                id=f"harmbench-{r['BehaviorID']}",
                instruction=prompt,
                label="harmful",
                source="harmbench",
                category=r["SemanticCategory"] or None,
            )
        )
    left = len(rows) - len(out)
    if left:
        log.info("harmbench: %d behavior(s) not of %s left out (subset= picks a category)", left, "/".join(kinds))
    return out


@SOURCES.register("jailbreakbench")
def _jailbreakbench(cfg: DataConfig) -> list[Record]:
    """JailbreakBench behaviors from path=<harmful-behaviors.csv> (Goal, Behavior, Category); subset=benign for
    benign-behaviors.csv."""
    label = cfg.subset or "harmful"
    if label not in ("harmful", "benign"):
        raise BnrError(f"jailbreakbench subset={label!r} is not harmful or benign; use subset=benign or drop it")
    rows = _rows(cfg, "jailbreakbench", ("Goal", "Behavior", "Category"))
    return [
        Record(
            id=f"jbb-{label}-{r.get('Index') or i + 1}",
            instruction=r["Goal"],
            label=label,
            source="jailbreakbench",
            category=r["Category"] or None,
        )
        for i, r in enumerate(rows)
    ]
