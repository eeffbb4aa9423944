"""The safety gate's early stop (`gate.stop_when_decided`, on by default) against the gate without it, on the toy
world: the same HS and over-refusal, for less decoding. The toy base refuses its harmful prompts and answers most
benign ones, so both kinds of row (decided by a refusal phrase, or running on) are in the probe."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest


@pytest.mark.parametrize("judges", [[], ["keyword"]], ids=["toy-harm", "keyword"])
def test_gate_numbers_equal_with_and_without_the_early_stop(judges: list[str], monkeypatch: Any) -> None:
    import importlib

    from bnr import plugins
    from bnr.service.gate import probe
    from bnr.service.jobspec import job_settings
    from bnr.service.settings import BasePolicy, SafetyGate

    generation = importlib.import_module("bnr.eval.generate")  # the module (bnr.eval exports the function too)
    plugins.load()
    cfg = job_settings(BasePolicy(name="toy-sft", preset="toy", defense="sft"), 10)
    on = SafetyGate(judges=judges)
    assert on.stop_when_decided  # the default
    off = dataclasses.replace(on, stop_when_decided=False, batch_size=64)

    computed = {"until": 0, "generate": 0}  # rows x forward calls: the decoding each path paid for

    def counting(name: str) -> Any:
        real = getattr(generation, name)

        def run(model: Any, tokenizer: Any, batch: list[list[int]], **kwargs: Any) -> list[str]:
            key = "until" if name == "_generate_until" else "generate"

            def hook(_module: Any, args: Any, kw: dict[str, Any]) -> None:
                ids = kw.get("input_ids", args[0] if args else None)
                computed[key] += int(ids.shape[0])

            handle = model.register_forward_pre_hook(hook, with_kwargs=True)
            try:
                return real(model, tokenizer, batch, **kwargs)
            finally:
                handle.remove()

        return run

    monkeypatch.setattr(generation, "_generate_until", counting("_generate_until"))
    monkeypatch.setattr(generation, "_generate_batch", counting("_generate_batch"))
    fast = probe(cfg, on, None)
    assert computed["until"] > 0, "the early stop never ran"
    slow_before = computed["generate"]  # a harmful benchmark with a judge reading whole answers keeps generate
    slow = probe(cfg, off, None)
    assert computed["until"] > 0 and computed["generate"] > slow_before
    assert (fast["hs"], fast["over_refusal"]) == (slow["hs"], slow["over_refusal"])
    cost_on = computed["until"] + slow_before
    cost_off = computed["generate"] - slow_before
    if judges == ["keyword"]:  # the toy base refuses its harmful prompts: those rows end after a few tokens
        assert cost_on < 0.75 * cost_off, (cost_on, cost_off)
    else:
        assert cost_on <= cost_off, (cost_on, cost_off)
