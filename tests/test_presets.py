"""Every shipped preset is a valid config whose registry names resolve, without loading any model or data."""

from __future__ import annotations

import pytest

from bnr.config import Config, DataConfig, load_config, preset_names
from bnr.data.sources import SOURCES
from bnr.data.templates import TEMPLATES
from bnr.defenses import DEFENSES
from bnr.eval.protocols import PROTOCOLS
from bnr.merge import MERGE_METHODS


def _data_sections(c: Config) -> list[DataConfig]:
    return [
        c.buffer.data,
        c.reinforce.refusal_data,
        c.reinforce.benign_data,
        c.align.refusal_data,
        c.align.benign_data,
        c.user.benign_data,
        c.user.harmful_data,
    ]


@pytest.mark.parametrize("name", preset_names())
def test_preset_names_resolve(name: str) -> None:
    cfg = load_config(name)
    assert cfg.description, f"preset {name} has no description"
    TEMPLATES.get(cfg.template)
    DEFENSES.get(cfg.user.defense)
    MERGE_METHODS.get(cfg.merge.method)
    PROTOCOLS.get(cfg.eval.protocol)
    for data in _data_sections(cfg):
        SOURCES.get(data.source)


@pytest.mark.parametrize(
    ("name", "model", "alpha", "user_lr"),
    [
        ("paper", "meta-llama/Meta-Llama-3-8B-Instruct", 0.1, 1e-5),
        ("gemma2-9b", "google/gemma-2-9b-it", 1.0, 5e-6),
        ("qwen3-4b", "Qwen/Qwen3-4B-Instruct-2507", 0.0, 5e-5),
    ],
)
def test_paper_model_presets_carry_released_constants(name: str, model: str, alpha: float, user_lr: float) -> None:
    cfg = load_config(name)
    assert cfg.model.name_or_path == model
    assert cfg.merge.alpha == alpha and cfg.merge.scale == 0.5 and cfg.merge.tau == 0.01
    assert cfg.user.train.lr == user_lr
    assert (cfg.user.lora.r, cfg.user.lora.alpha) == (32, 64)
    assert cfg.buffer.train.batch_size * cfg.buffer.train.grad_accum == 8
