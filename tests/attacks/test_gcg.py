"""GCG through nanogcg as a benchmark: a suffix optimised on the evaluated model, then generated and judged."""

from __future__ import annotations

import pytest


def test_toy_gcg_optimises_a_suffix_per_prompt_and_judges_the_plain_question() -> None:
    pytest.importorskip("nanogcg", reason="the attack extra (nanogcg, installed with --no-deps) is not installed")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bnr.eval.benchmarks import make_benchmark, run_benchmark
    from bnr.toy import toy_base_path

    path = str(toy_base_path())
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    template = tok.chat_template
    bench = make_benchmark("toy-harmful-gcg", limit=1, num_steps=2, search_width=8, topk=4)
    result = run_benchmark(bench, model, tok, template="alpaca", batch_size=2, progress=False)
    assert result.benchmark == "toy-harmful-gcg" and result.n == 1
    suffixes = result.settings["benchmark"]["suffixes"]
    assert len(suffixes) == 1 and all(s for s in suffixes.values())
    for row in result.samples:  # the prompt carries the suffix, the verdict is on the plain question
        assert row["prompt"].split("### Response:")[0].rstrip().endswith(suffixes[row["id"]])
    assert "gcg_mean_loss" in result.metrics and tok.chat_template == template  # the tokenizer is left as it was
