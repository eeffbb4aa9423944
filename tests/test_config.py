from __future__ import annotations

from pathlib import Path

import pytest

from bnr.config import load_config, parse_overrides, preset_names, to_yaml
from bnr.errors import BnrError


def test_defaults_follow_paper_preset() -> None:
    cfg = load_config(None)
    assert (cfg.user.lora.r, cfg.user.lora.alpha, cfg.user.lora.dropout) == (32, 64, 0.1)
    assert cfg.user.lora.target_modules == ["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]
    assert (cfg.merge.alpha, cfg.merge.tau, cfg.merge.scale) == (0.1, 0.01, 0.5)
    assert (cfg.user.train.lr, cfg.user.train.schedule, cfg.user.train.warmup_ratio) == (1e-5, "cosine", 0.05)


def test_overrides_are_typed_and_nested() -> None:
    cfg = load_config(
        None, ["user.p=0.2", "merge.alpha=1", "user.train.lr=5e-3", "user.lora.target_modules=q_proj,v_proj"]
    )
    assert cfg.user.p == 0.2 and cfg.merge.alpha == 1.0 and isinstance(cfg.merge.alpha, float)
    assert cfg.user.train.lr == 5e-3
    assert cfg.user.lora.target_modules == ["q_proj", "v_proj"]


def test_aliases_map_short_keys() -> None:
    cfg = load_config(None, ["user=a", "alpha=0.5"], {"user": "merge.user", "alpha": "merge.alpha"})
    assert cfg.merge.user == "a" and cfg.merge.alpha == 0.5


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("user.q=1", "unknown config key 'user.q'"),
        ("usr.p=1", "unknown config key 'usr'"),
        ("user.p=abc", "'user.p' has a wrong type"),
        ("user.p=1.5", "user.p must be in [0, 1]"),
        ("user.p=-0.1", "user.p must be in [0, 1]"),
        ("merge.alpha=2", "merge.alpha must be in [0, 1]"),
        ("merge.scale=0", "merge.scale must be > 0"),
        ("user.train.lr=0", "user.train.lr must be > 0"),
        ("user.lora.r=0", "user.lora.r must be >= 1"),
        ("user.buffer_mode=fused", "'user.buffer_mode' is 'fused'; valid: merged, separate"),
    ],
)
def test_bad_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(BnrError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [override])


def test_override_without_equals_is_an_error() -> None:
    with pytest.raises(BnrError, match="not key=value"):
        parse_overrides(["user.p"])


def test_yaml_file_inherits_and_round_trips(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("seed: 7\nuser:\n  n: 50\n  p: 0.3\n")
    child = tmp_path / "child.yaml"
    child.write_text(f"inherits: {base}\nuser:\n  p: 0.1\n")
    cfg = load_config(str(child))
    assert (cfg.seed, cfg.user.n, cfg.user.p) == (7, 50, 0.1)
    again = tmp_path / "again.yaml"
    again.write_text(to_yaml(cfg))
    assert load_config(str(again)) == cfg


def test_missing_and_unknown_presets() -> None:
    with pytest.raises(BnrError, match="unknown preset 'nope'"):
        load_config("nope")
    with pytest.raises(BnrError, match="not found"):
        load_config("/no/such/file.yaml")


def test_every_builtin_preset_validates() -> None:
    for name in preset_names():
        load_config(name)
