"""The toy base's unaligned counterpart: built from the aligned weights, same tokenizer, its own cache entry."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
def test_unaligned_counterpart_shares_tokenizer_and_differs_in_weights(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from bnr.toy.base import base_dir, toy_base_path, toy_unaligned_path
    from bnr.toy.config import ToyBaseConfig, ToyBaseTrainConfig, ToyConfig

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
    from bnr.errors import BnrError
    from bnr.toy.base import toy_base_path
    from bnr.toy.config import ToyBaseConfig, ToyBaseTrainConfig, ToyConfig

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

    from bnr.toy.base import BUILD_INFO, BUILD_THREADS, toy_base_path
    from bnr.toy.config import ToyBaseConfig, ToyBaseTrainConfig, ToyConfig

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


def test_the_shipped_base_is_the_default_base_and_installs_into_an_empty_cache(tmp_path: Path) -> None:
    """bnr ships the default base (its key is the default recipe's), checked file by file, copied into the cache
    on first use instead of a ~6.5-minute build; `toy.prebuilt=false` does not use it."""
    import json

    from bnr.errors import BnrError
    from bnr.toy.base import BUILD_INFO, PREBUILT, base_dir, file_digests, toy_base_path
    from bnr.toy.config import ToyConfig

    cfg = ToyConfig(cache_dir=str(tmp_path / "cache"))
    assert [p.name for p in PREBUILT.iterdir()] == [base_dir(cfg).name]
    shipped = json.loads((PREBUILT / base_dir(cfg).name / BUILD_INFO).read_text())
    path = toy_base_path(cfg, build=False)  # raises if it had to be built
    assert path == base_dir(cfg) and list(path.parent.iterdir()) == [path]
    assert file_digests(path) == shipped["files"] and len(shipped["files"]) >= 5
    assert shipped["files"]["model.safetensors"].startswith("edb3e297")  # the base every toy number was made on
    with pytest.raises(BnrError, match="the toy base is not built yet"):
        toy_base_path(ToyConfig(cache_dir=str(tmp_path / "other"), prebuilt=False), build=False)


def test_a_corrupted_shipped_base_is_refused_and_nothing_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from bnr.errors import BnrError
    from bnr.toy import base
    from bnr.toy.config import ToyConfig

    prebuilt = tmp_path / "prebuilt"
    shutil.copytree(base.PREBUILT, prebuilt)
    weights = next(prebuilt.glob("*/model.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(base, "PREBUILT", prebuilt)
    cache = tmp_path / "cache"
    with pytest.raises(BnrError, match=r"does not match its recorded sha256 digests; reinstall bnr, or build"):
        base.toy_base_path(ToyConfig(cache_dir=str(cache)), build=False)
    assert not cache.exists() or list(cache.iterdir()) == []


@pytest.mark.slow
def test_the_shipped_base_is_what_the_recipe_builds(tmp_path: Path) -> None:
    """The shipped base is no opaque blob: the default recipe, built from scratch (one thread, ~6.5 min), gives
    the same bytes in every file."""
    import json

    from bnr.toy.base import BUILD_INFO, PREBUILT, file_digests, toy_base_path
    from bnr.toy.config import ToyConfig

    built = toy_base_path(ToyConfig(cache_dir=str(tmp_path), prebuilt=False), progress=False)
    shipped = json.loads((PREBUILT / built.name / BUILD_INFO).read_text())
    assert file_digests(built) == shipped["files"]
