"""The toy world's config section (`toy.*`: the aligned toy base, `bnr toy build` and `bnr demo`), registered into
the root config when this module is imported (`bnr.config.register_section`); core modules never name it."""

from __future__ import annotations

from dataclasses import dataclass, field

from bnr.config import MOVED_KEYS, TrainConfig, register_section
from bnr.errors import BnrError


@dataclass
class ToyBaseTrainConfig(TrainConfig):
    """The toy base's from-scratch training (full parameters): TrainConfig with toy defaults."""

    lr: float = 2e-3
    epochs: float = 8.0
    batch_size: int = 32
    log_every: int = 50


@dataclass
class ToyBaseConfig:
    """The aligned toy base: a tiny Llama trained from scratch (full parameters) on the world's base mix."""

    hidden: int = 64
    layers: int = 4
    heads: int = 4
    intermediate: int = 128
    seed: int = 0
    template: str = "alpaca"
    max_length: int = 160
    pretrain_repeats: int = 3
    held_in_min: float = 75.0  # build gate: FA (%) the base must reach on its held-in sst2/agnews items (0: off)
    train: ToyBaseTrainConfig = field(default_factory=ToyBaseTrainConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.held_in_min <= 100.0:
            raise BnrError(
                f"toy.base.held_in_min is a percentage in [0, 100] (got {self.held_in_min}); 0 turns the gate off"
            )


@dataclass
class ToyConfig:
    """`bnr toy build` and `bnr demo`: the aligned toy base and how many torch threads they (and a sweep of the
    toy world) use.

    The world itself is a fixed, versioned dataset (`bnr.toy.world`, `{source: toy, path: <split>}`); the
    stages' data, LoRA and training knobs are the ordinary buffer/reinforce/user/merge sections of the preset,
    and the demo's grid is its `sweep` section (preset `toy-demo`).
    """

    base: ToyBaseConfig = field(default_factory=ToyBaseConfig)
    eval_batch_size: int = 128  # generation batch of `bnr toy build`'s evaluation of the base
    threads: int = 2  # torch intra-op threads of `bnr toy build`, `bnr demo` and `bnr sweep` of the toy world
    cache_dir: str | None = None  # where built bases are cached (null: $BNR_CACHE or ~/.cache/bnr)
    prebuilt: bool = True  # install the default base shipped with bnr (the same bits) instead of building it


register_section("toy", ToyConfig)
# toy keys that were removed, with where their meaning lives now (shown in the unknown-key error)
MOVED_KEYS.update(
    {
        "toy.ps": "sweep.p (`bnr demo p=[...]`)",
        "toy.seeds": "sweep.seeds",
        "toy.scales": "sweep.axes={merge.scale: [...]}",
        "toy.methods": (
            "sweep.defenses, with the registry's names (sft, bnr, bnr-buffer-only, bnr-reinforce-only, ...)"
        ),
        "toy.out": "sweep.out (`bnr demo out=...`)",
        "toy.plot": "sweep.plots",
        "toy.task": (
            "user.benign_data.path=benign_<task> and eval.benchmarks=[toy-harmful,toy-over-refusal,toy-<task>]"
        ),
    }
)
