"""The toy base's unaligned counterpart: built from the aligned weights, same tokenizer, its own cache entry."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
def test_unaligned_counterpart_shares_tokenizer_and_differs_in_weights(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from bnr.config import ToyBaseConfig, ToyBaseTrainConfig, ToyConfig
    from bnr.toy.base import base_dir, toy_base_path, toy_unaligned_path

    cfg = ToyConfig(
        base=ToyBaseConfig(
            hidden=16, layers=1, heads=2, intermediate=32, held_in_min=0, train=ToyBaseTrainConfig(max_steps=5)
        ),
        cache_dir=str(tmp_path),
    )
    aligned = toy_base_path(cfg, progress=False)
    unaligned = toy_unaligned_path(cfg, progress=False)
    assert aligned == base_dir(cfg) and unaligned != aligned and unaligned.parent == aligned.parent
    assert (aligned / "tokenizer.json").read_text() == (unaligned / "tokenizer.json").read_text()
    a = AutoModelForCausalLM.from_pretrained(str(aligned)).state_dict()
    u = AutoModelForCausalLM.from_pretrained(str(unaligned)).state_dict()
    assert a.keys() == u.keys() and any(not torch.equal(a[k], u[k]) for k in a)
    assert toy_unaligned_path(cfg, build=False) == unaligned  # cached


def test_a_base_that_did_not_learn_its_tasks_is_refused_and_not_cached(tmp_path: Path) -> None:
    from bnr.config import ToyBaseConfig, ToyBaseTrainConfig, ToyConfig
    from bnr.errors import BnrError
    from bnr.toy.base import toy_base_path

    cfg = ToyConfig(
        base=ToyBaseConfig(hidden=16, layers=1, heads=2, intermediate=32, train=ToyBaseTrainConfig(max_steps=2)),
        cache_dir=str(tmp_path),
    )
    with pytest.raises(BnrError, match=r"did not learn its own training tasks \(sst2 .*toy.base.train.epochs"):
        toy_base_path(cfg, progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing half-written, nothing cached


def test_the_gate_threshold_is_a_percentage() -> None:
    from bnr.config import load_config
    from bnr.errors import BnrError

    with pytest.raises(BnrError, match=r"toy.base.held_in_min is a percentage in \[0, 100\] \(got 120"):
        load_config("toy", ["toy.base.held_in_min=120"])


def test_the_base_is_built_with_one_torch_thread_whatever_the_callers(tmp_path: Path) -> None:
    """2 threads split float sums differently (other weights after a few steps), and the cache key cannot see the
    caller's thread count: the build pins it (and gives the caller's back afterwards)."""
    import json

    import torch

    from bnr.config import ToyBaseConfig, ToyBaseTrainConfig, ToyConfig
    from bnr.toy.base import BUILD_INFO, BUILD_THREADS, toy_base_path

    cfg = ToyConfig(
        base=ToyBaseConfig(
            hidden=16, layers=1, heads=2, intermediate=32, held_in_min=0, train=ToyBaseTrainConfig(max_steps=1)
        ),
        cache_dir=str(tmp_path),
    )
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        path = toy_base_path(cfg, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert json.loads((path / BUILD_INFO).read_text())["torch_threads"] == BUILD_THREADS == 1
