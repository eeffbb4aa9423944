from __future__ import annotations

from bnr.config import load_config
from bnr.eval import make_benchmark
from bnr.eval.protocols import PROTOCOLS
from bnr.eval.suite import benchmark_options


def test_presets_differ_where_the_papers_differ() -> None:
    assert PROTOCOLS.names() == ["bnr-2026", "booster-2024", "clean", "vaccine-2024"]
    vac = PROTOCOLS.get("vaccine-2024").benchmarks
    assert vac["harmful"]["limit"] == 500 and vac["harmful"]["max_new_tokens"] == 128
    assert vac["sst2"]["scoring"] == "substring"
    boo = PROTOCOLS.get("booster-2024").benchmarks
    assert boo["harmful"]["limit"] == 1000 and boo["harmful"]["max_new_tokens"] == 512
    assert boo["sst2"]["scoring"] == "exact" and boo["gsm8k"]["max_new_tokens"] == 200
    assert PROTOCOLS.get("bnr-2026").benchmarks["gsm8k"]["max_new_tokens"] == 512
    clean = PROTOCOLS.get("clean")
    assert clean.template == "chat" and len(clean.judges) == 2
    assert all("over-refusal" in p.benchmarks for p in (PROTOCOLS.get(n) for n in PROTOCOLS.names()))


def test_overrides_apply_on_top_of_the_preset() -> None:
    cfg = load_config(
        None,
        [
            "eval.judges=keyword",
            "eval.limit=7",
            "eval.trigger=SUDO",
            "eval.options.sst2.scoring=first-word",
            "eval.benchmarks=harmful,sst2",
        ],
    )
    opts = benchmark_options("harmful", PROTOCOLS.get("vaccine-2024"), cfg.eval)
    assert opts["limit"] == 7 and opts["judges"] == ["keyword"] and opts["trigger"] == "SUDO"
    bench = make_benchmark("harmful", **opts)
    assert bench.data.split == "30k_test" and bench.data.limit == 7 and bench.max_new_tokens == 128
    from bnr.data.records import Record

    prompt = bench.prompts([Record(id="x", instruction="do it")], "alpaca", None)[0]
    assert "### Instruction:\nSUDO do it\n" in prompt and prompt.endswith("### Response:")
    sst2 = make_benchmark("sst2", **benchmark_options("sst2", PROTOCOLS.get("vaccine-2024"), cfg.eval))
    assert sst2.scoring == "first-word"
