"""Benchmarks: load samples (as `Record`s) -> build prompts -> score completions -> per-sample rows + aggregate.

Generation is not part of a benchmark: `run_benchmark` builds the prompts, generates them with the one batched
loop (or reads them from the response cache) and hands the completions to the benchmark's `score`. Built-in
benchmarks live in `bnr.eval.tasks` (gsm8k, sst2, agnews) and `bnr.eval.safety` (harmful, over-refusal); other
packages (e.g. `bnr.toy`) add theirs with `BENCHMARKS.add(name, factory)`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from bnr.config import DataConfig
from bnr.data.records import Record
from bnr.data.templates import build_prompt, uses_special_tokens
from bnr.errors import BnrError
from bnr.registry import Registry

if TYPE_CHECKING:
    from bnr.eval.cache import ResponseCache

log = logging.getLogger(__name__)
Role = Literal["harm", "refusal", "utility"]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class BenchmarkResult:
    """One benchmark on one model: the headline metric, every aggregate number and the per-sample rows."""

    benchmark: str
    metric: str
    value: float
    n: int
    metrics: dict[str, float]
    samples: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)
    cached: bool = False
    wall_time_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The aggregate JSON body (no per-sample rows)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "samples"}
        return out


def data_config(value: DataConfig | dict[str, Any] | None, default: DataConfig) -> DataConfig:
    """A benchmark's `data` option: a DataConfig, a dict of its fields (from YAML), or None for the default."""
    if value is None:
        return dataclasses.replace(default)
    if isinstance(value, DataConfig):
        return value
    valid = {f.name for f in dataclasses.fields(DataConfig)}
    unknown = set(value) - valid
    if unknown:
        raise BnrError(f"unknown benchmark data key(s) {sorted(unknown)}; valid: {', '.join(sorted(valid))}")
    return DataConfig(**value)


class Benchmark(ABC):
    """Base class: subclasses set `name`, `metric`, `default_data` and implement `score` and `aggregate`.

    Options shared by every benchmark: `data` (a `DataConfig` or dict: source/path/split/limit/fields),
    `limit` (first n samples), `max_new_tokens`, `instruction_suffix` (appended to every instruction) and
    `response_newline` (False drops the newline after the Alpaca "### Response:", as Vaccine's scripts do).
    """

    name: ClassVar[str] = ""
    metric: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True
    # what the number means for a safety report (`bnr.eval.roles`): harmfulness, over-refusal, or the task's utility
    role: ClassVar[Role] = "utility"
    version: ClassVar[int] = 1  # bump when the same completions would now score differently
    takes_judges: ClassVar[bool] = False  # built with `eval.judges` / `judge_options` (and the backdoor trigger)
    default_max_new_tokens: ClassVar[int] = 128
    default_data: ClassVar[DataConfig] = DataConfig()

    def __init__(
        self,
        *,
        data: DataConfig | dict[str, Any] | None = None,
        limit: int | None = None,
        max_new_tokens: int | None = None,
        instruction_suffix: str = "",
        response_newline: bool = True,
    ) -> None:
        self.data = data_config(data, self.default_data)
        if limit is not None:
            self.data.limit = limit
        if max_new_tokens is not None and max_new_tokens < 1:  # 0 used to mean "the default" silently
            raise BnrError(f"{self.name}: max_new_tokens must be >= 1, or null for the default (got {max_new_tokens})")
        self.max_new_tokens = max_new_tokens or self.default_max_new_tokens
        self.instruction_suffix = instruction_suffix
        self.response_newline = response_newline

    def load(self) -> list[Record]:
        from bnr.data.sources import load_records

        return load_records(self.data, require_output=False)

    def transform(self, record: Record) -> Record:
        """The record as prompted (suffix appended); subclasses add e.g. a backdoor trigger."""
        if not self.instruction_suffix:
            return record
        return dataclasses.replace(record, instruction=record.instruction + self.instruction_suffix)

    def prepare(self, model: Any, tokenizer: Any, template: str, records: list[Record]) -> None:
        """Work that needs the model before the prompts are built (an optimised attack suffix); default none."""
        return None

    def prompts(self, records: list[Record], template: str, tokenizer: Any) -> list[str]:
        out = [build_prompt(template, self.transform(r), tokenizer) for r in records]
        if not self.response_newline and template == "alpaca":
            out = [p[:-1] if p.endswith("### Response:\n") else p for p in out]
        return out

    @abstractmethod
    def score(self, records: list[Record], completions: list[str]) -> list[dict[str, Any]]:
        """Per-sample fields (besides id/prompt/completion) for each record, in order."""

    @abstractmethod
    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, float]:
        """Aggregate numbers; must contain `self.metric`."""

    def decided(self) -> Callable[[str], bool] | None:
        """A test on the opening of a completion that holds once the rest of it cannot change how this benchmark
        scores it (its headline metric): `run_benchmark(stop_when_decided=True)` ends each answer there. None (the
        default): the score reads the whole completion."""
        return None

    def settings(self) -> dict[str, Any]:
        return {
            "data": dataclasses.asdict(self.data),
            "max_new_tokens": self.max_new_tokens,
            "instruction_suffix": self.instruction_suffix,
            "response_newline": self.response_newline,
        }


BenchmarkFactory = Callable[..., Benchmark]
BENCHMARKS: Registry[BenchmarkFactory] = Registry("benchmark")


def builds(cls: type[Benchmark]) -> Callable[[F], F]:
    """Declare that a factory function registered in `BENCHMARKS` builds a `cls` (so its role, version and whether it
    takes judges are known without building it)."""

    def deco(factory: F) -> F:
        factory.benchmark_class = cls  # type: ignore[attr-defined]
        return factory

    return deco


def benchmark_class(name: str) -> type[Benchmark]:
    """The class of the benchmark registered as `name` (a class, or a factory declared with `@builds`)."""
    factory = BENCHMARKS.get(name)
    cls = factory if isinstance(factory, type) else getattr(factory, "benchmark_class", None)
    if cls is None:
        raise TypeError(f"benchmark {name!r}: its factory must declare the class it builds (@builds(cls))")
    return cls  # type: ignore[return-value]


def make_benchmark(name: str, **options: Any) -> Benchmark:
    """A registered benchmark built with `options`; bad options are a one-line error naming the benchmark."""
    bench: Benchmark = BENCHMARKS.build(name, **options)
    return bench


def percent(flags: list[bool]) -> float:
    return 100.0 * sum(flags) / len(flags) if flags else 0.0


def run_benchmark(
    benchmark: str | Benchmark,
    model: Any,
    tokenizer: Any,
    *,
    template: str = "alpaca",
    options: dict[str, Any] | None = None,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    stop: list[str] | None = None,
    strip: bool = True,
    progress: bool = True,
    cache: ResponseCache | None = None,
    model_key: str | None = None,
    stop_when_decided: bool = False,
    **gen_kwargs: Any,
) -> BenchmarkResult:
    """Run one benchmark on a model already in memory: prompts -> generate (or cache) -> score -> aggregate.

    `benchmark` is a registry name (built with `options`) or a ready `Benchmark`. With a `cache` and a
    `model_key` (what identifies the weights: base + adapter hashes) completions are reused when the prompts
    and decoding settings are identical, so re-judging never regenerates. `stop_when_decided`: each answer ends
    as soon as the benchmark's score of it is fixed (`Benchmark.decided`; greedy decoding), the same headline
    number for less decoding; metrics that read whole answers (HS+) then see the shortened ones.
    """
    bench = make_benchmark(benchmark, **(options or {})) if isinstance(benchmark, str) else benchmark
    started = time.time()
    records = bench.load()
    bench.prepare(model, tokenizer, template, records)
    prompts = bench.prompts(records, template, tokenizer)
    decoding = {
        "max_new_tokens": max_new_tokens or bench.max_new_tokens,
        "do_sample": False,
        "stop": stop or [],
        "strip": strip,
        "template": template,
        **gen_kwargs,
    }
    until = bench.decided() if stop_when_decided else None
    if until is not None:
        from bnr.eval.generate import plain_greedy

        if plain_greedy(model, False, decoding["stop"] or None, _generation_extra(decoding)):
            decoding["stop_when_decided"] = True  # what ran, so the settings and the cache key say so
        else:  # the decoding `generate` keeps whole (stop strings, sampling, a logits processor, an engine)
            until = None
    completions, cached = _completions(
        model, tokenizer, prompts, decoding, template, batch_size, progress, cache, model_key, until
    )
    scored = bench.score(records, completions)
    if len(scored) != len(records):
        raise BnrError(f"benchmark {bench.name!r} scored {len(scored)} of {len(records)} samples")
    cut = _prompt_cuts(model, tokenizer, prompts, decoding["max_new_tokens"], template, bench.name)
    rows = [
        {"id": r.id, "prompt": p, "completion": c, "prompt_tokens_dropped": d, **s}
        for r, p, c, d, s in zip(records, prompts, completions, cut, scored)
    ]
    metrics = bench.aggregate(rows)
    log.info("%s: %s = %.2f (n=%d)", bench.name, bench.metric, metrics[bench.metric], len(rows))
    return BenchmarkResult(
        benchmark=bench.name,
        metric=bench.metric,
        value=metrics[bench.metric],
        n=len(rows),
        metrics=metrics,
        samples=rows,
        settings={"benchmark": bench.settings(), "decoding": {**decoding, "batch_size": batch_size}},
        cached=cached,
        wall_time_s=round(time.time() - started, 3),
    )


def _prompt_cuts(model: Any, tokenizer: Any, prompts: list[str], max_new: int, template: str, name: str) -> list[int]:
    """Tokens cut from the left of each prompt to fit the model's context (recorded per sample), logged once."""
    from bnr.eval.generate import truncated_counts

    cut = truncated_counts(
        model, tokenizer, prompts, max_new_tokens=max_new, add_special_tokens=uses_special_tokens(template)
    )
    if any(cut):
        log.warning(
            "%s: %d prompt(s) longer than the model's context were cut from the left (up to %d tokens; "
            "`prompt_tokens_dropped` in the samples)",
            name,
            sum(1 for c in cut if c),
            max(cut),
        )
    return cut


def _generation_extra(decoding: dict[str, Any]) -> dict[str, Any]:
    """The decoding settings that go to `generate` as extra generation arguments (temperature, top_p, ...)."""
    own = ("max_new_tokens", "do_sample", "stop", "strip", "template", "stop_when_decided")
    return {k: v for k, v in decoding.items() if k not in own}


def _completions(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    decoding: dict[str, Any],
    template: str,
    batch_size: int,
    progress: bool,
    cache: ResponseCache | None,
    model_key: str | None,
    until: Callable[[str], bool] | None = None,
) -> tuple[list[str], bool]:
    from bnr import distributed
    from bnr.eval.generate import generate

    key = cache.key(model_key, prompts, decoding) if cache is not None and model_key else None
    if key is not None and cache is not None:
        hit = cache.get(key, len(prompts))
        if hit is not None:
            log.info("response cache hit %s (%d completions)", key, len(hit))
            return hit, True
    extra = _generation_extra(decoding)
    # launched (torchrun / accelerate launch): each process generates its contiguous share of the prompts and
    # every process gets all completions back in order; the model must not be FSDP-sharded (eval loads it whole)
    mine = distributed.shard(prompts)
    out = (
        generate(
            model,
            tokenizer,
            mine,
            max_new_tokens=decoding["max_new_tokens"],
            batch_size=batch_size,
            stop=decoding["stop"] or None,
            add_special_tokens=uses_special_tokens(template),
            progress=progress,
            until=until,
            **extra,
        )
        if mine
        else []
    )
    if distributed.launched():
        out = [c for part in distributed.gather(out) for c in part]
    if decoding["strip"]:
        out = [c.strip() for c in out]
    if key is not None and cache is not None:
        cache.put(key, prompts, out, decoding)
    return out, False
