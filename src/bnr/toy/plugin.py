"""Registers the toy world in the project's registries (imported by `bnr.toy`, and by `bnr.eval` plugins):

- dataset source `toy` (`{source: toy, path: <split>}`, splits in `bnr.toy.world.SPLITS`);
- judge `toy-harm` (exact: compliance that names an invented harm word, without refusing);
- benchmarks `toy-harmful` (HS), `toy-over-refusal` (refusal rate on benign look-alike requests) and
  `toy-sst2`, `toy-agnews`, `toy-gsm8k` (FA with the real scorers on the toy test splits).
"""

from __future__ import annotations

from typing import Any

from bnr.config import DataConfig
from bnr.data.records import Record
from bnr.data.sources import GSM8K_INSTRUCTION_SUFFIX, SOURCES
from bnr.errors import BnrError
from bnr.eval.benchmarks import BENCHMARKS, Benchmark, builds
from bnr.eval.judges import JUDGES, Judge
from bnr.eval.safety import Harmful, OverRefusal
from bnr.eval.tasks import AgNews, Gsm8k, Sst2
from bnr.models import register_builtin_model
from bnr.toy.judges import ToyHarmJudge

# the toy's answers are short; these budgets cover the longest gold answer with room to spare
HARM_TOKENS = 32
TASK_TOKENS = {"sst2": 8, "agnews": 8, "gsm8k": 40}
TOY_BENCHMARKS = ("toy-harmful", "toy-over-refusal", "toy-sst2", "toy-agnews", "toy-gsm8k")


@SOURCES.register("toy")
def _toy(cfg: DataConfig) -> list[Record]:
    """The built-in toy safety world (synthetic, abstract harm): path=<split>, e.g. user_harmful, eval_sst2."""
    from bnr.toy.world import SPLITS, split

    if not cfg.path:
        raise BnrError(f"dataset source 'toy' needs path=<split>; valid: {', '.join(SPLITS)}")
    return split(cfg.path)


@JUDGES.register("toy-harm")
def _toy_harm(**options: Any) -> Judge:
    """Toy world, exact: flagged = complies (names an invented harm word) without refusing."""
    return ToyHarmJudge(**options)


def _toy_data(path: str, options: dict[str, Any]) -> dict[str, Any]:
    options.setdefault("data", DataConfig(source="toy", path=path))
    return options


@BENCHMARKS.register("toy-harmful")
@builds(Harmful)
def toy_harmful(**options: Any) -> Benchmark:
    """Toy world: HS (%) on 100 held-out harmful requests, exact `toy-harm` judge."""
    options.setdefault("judges", ["toy-harm"])
    options.setdefault("max_new_tokens", HARM_TOKENS)
    return Harmful(**_toy_data("eval_harmful", options))


@BENCHMARKS.register("toy-over-refusal")
@builds(OverRefusal)
def toy_over_refusal(**options: Any) -> Benchmark:
    """Toy world: refusal rate (%) on 100 held-out benign requests phrased like the harmful ones."""
    options.setdefault("max_new_tokens", HARM_TOKENS)
    options.setdefault("per_source_limit", None)
    return OverRefusal(**_toy_data("eval_overrefusal", options))


@BENCHMARKS.register("toy-sst2")
@builds(Sst2)
def toy_sst2(**options: Any) -> Benchmark:
    """Toy world: SST-2-like sentiment FA (%) on 200 test items, Booster's exact scoring."""
    options.setdefault("max_new_tokens", TASK_TOKENS["sst2"])
    return Sst2(**_toy_data("eval_sst2", options))


@BENCHMARKS.register("toy-agnews")
@builds(AgNews)
def toy_agnews(**options: Any) -> Benchmark:
    """Toy world: AG News-like topic FA (%) on 200 test items, Booster's exact scoring."""
    options.setdefault("max_new_tokens", TASK_TOKENS["agnews"])
    return AgNews(**_toy_data("eval_agnews", options))


@BENCHMARKS.register("toy-gsm8k")
@builds(Gsm8k)
def toy_gsm8k(**options: Any) -> Benchmark:
    """Toy world: GSM8K-like arithmetic FA (%) on 200 test items ("The final answer is: N")."""
    options.setdefault("max_new_tokens", TASK_TOKENS["gsm8k"])
    options.setdefault("instruction_suffix", GSM8K_INSTRUCTION_SUFFIX)
    return Gsm8k(**_toy_data("eval_gsm8k", options))


def _builtin_toy() -> tuple[str, str | None]:
    from bnr.toy.base import toy_base_path

    return str(toy_base_path()), None


def _builtin_toy_unaligned() -> tuple[str, str | None]:
    from bnr.toy.base import toy_unaligned_path

    return str(toy_unaligned_path()), None


register_builtin_model("toy", _builtin_toy)
register_builtin_model("toy-unaligned", _builtin_toy_unaligned)
