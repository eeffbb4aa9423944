"""`bnr eval`: evaluate a run directory, a PEFT adapter folder or a model under a protocol preset.

Reads top to bottom: pick the protocol, resolve the target, build every benchmark (judges load here, so a
missing judge fails before any generation), then the evaluation run (`bnr.orchestrate.evaluation`), and print.
"""

from __future__ import annotations

from pathlib import Path

from bnr.cards import results_table
from bnr.config import Config
from bnr.errors import BnrError
from bnr.eval.backends import require_backend
from bnr.eval.protocols import PROTOCOLS
from bnr.eval.report import read_summary
from bnr.eval.suite import build_benchmarks
from bnr.eval.target import resolve_target
from bnr.orchestrate.evaluation import evaluate_run


def run(cfg: Config) -> Path:
    protocol = PROTOCOLS.get(cfg.eval.protocol)
    resolve_target(cfg.eval.target, cfg.model)  # a bad target fails before judges load
    require_backend(cfg.eval.backend)
    out = evaluate_run(cfg, build_benchmarks(protocol, cfg.eval))
    summary = read_summary(out)
    print(f"protocol {summary.get('protocol')}; results in {out}\n" + "\n".join(results_table(summary["results"])))
    invalid = [name for name, res in summary["results"].items() if res.get("valid") is False]
    if invalid:
        raise BnrError(
            f"the {', '.join(invalid)} result(s) are INVALID (most completions are empty; see {out}) and were not "
            "added to any model card; check the model, template= and the stop strings"
        )
    return out
