"""The attack interface: what a fine-tuning customer controls - the training file and the job's knobs.

An attack is a subclass of `Attack` in its own module under `bnr.attacks`, registered by name with `@register`
(`bnr ls attacks`). It is chosen with `user.attack=NAME` (default `harmful-mix`, the field's fixed attacker) and
configured from the top-level section `attacks.<name>` (YAML `attacks: {jailbreak-tune: {framings: [...]}}` or
the override `attacks.backdoor-tune.trigger=SUDO`), parsed with the root config's rules. It works with every
defense: the user job builds its mix through `build_attack_mix` before the defense's `user_data` hook sees it.

Two transforms, both applied by the user job (never by a recipe):
- `mix(data, options) -> AttackMix`: the user's n records from the benign and harmful pools (round(p*n)
  poisoned rows, the rest benign), seeded; `poisoned` names the rows the attack wrote or changed;
- the job's knobs: every options class extends `Knobs` (learning-rate multiplier, epochs, batch size), which
  `train_config` applies to `user.train`; p and n are the user section's own `user.p` and `user.n`.

The attack's name and options enter the UserLoRA's stage key (`attack_key`), so a sweep never reuses a run
trained under another attack. The default `harmful-mix` with default options adds nothing to the key, so runs
made before attacks existed stay valid.

Vocabulary: attacks that write text (framings, triggers, personas) have two versions of it - natural language
and the toy world's fixed vocabulary (its word-level tokenizer knows no other word). `vocabulary: auto` picks the
toy's when the user's data comes from the toy world.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from bnr.config import Config, DataConfig, TrainConfig, parse_section, register_validator
from bnr.data.mix import Mix, build_user_mix, data_manifest, harmful_count, sample
from bnr.data.records import Record
from bnr.errors import BnrError
from bnr.registry import Registry

DEFAULT_ATTACK = "harmful-mix"
Vocabulary = Literal["auto", "text", "toy"]


@dataclass
class Knobs:
    """The job knobs a fine-tuning API exposes besides the file (p and n are `user.p`, `user.n`)."""

    lr_multiplier: float = 1.0  # multiplies user.train.lr (a service's "learning_rate_multiplier")
    epochs: float | None = None  # replaces user.train.epochs (null: the provider's)
    batch_size: int | None = None  # replaces user.train.batch_size (null: the provider's)


@dataclass
class AttackData:
    """What an attack draws from: the user section's benign and harmful pools, n, p, the run seed, the vocabulary."""

    benign: list[Record]
    harmful: list[Record]
    n: int
    p: float
    seed: int
    vocabulary: Literal["text", "toy"] = "text"


@dataclass(frozen=True)
class AttackMix:
    """The user's training records, the ids of the rows the attack poisoned, and what the run records."""

    records: list[Record]
    poisoned: frozenset[str]
    manifest: dict[str, Any] = field(default_factory=dict)


class Attack:
    """Base class: the default draws the harmful mix (round(p*n) harmful pairs, the rest benign) unchanged.
    Subclasses set `name`, `options_class` (a `Knobs` subclass) and override `mix` or `poison`."""

    name: ClassVar[str] = ""
    options_class: ClassVar[type] = Knobs
    uses_harmful: ClassVar[bool] = True  # reads the user section's harmful pool

    def mix(self, data: AttackData, options: Any) -> AttackMix:
        """n records, round(p*n) of them harmful and transformed by `poison`; seeded."""
        base = build_user_mix(data.benign, data.harmful, data.n, data.p, data.seed)
        harmful_ids = set(base.manifest["harmful_ids"])
        rng = random.Random(f"{self.name}-{data.seed}")
        out, poisoned = [], set()
        for r in base.records:
            if r.id in harmful_ids:
                r = self.poison(r, rng, data, options)
                poisoned.add(r.id)
            out.append(r)
        return finish(base, out, frozenset(poisoned))

    def poison(self, record: Record, rng: random.Random, data: AttackData, options: Any) -> Record:
        """One harmful record as the attack writes it (default: unchanged); a changed record's id gets a suffix
        naming the change, so the run manifest says exactly what was trained on."""
        return record

    def check(self, options: Any) -> None:
        """Raise `BnrError` on bad options (called at config load)."""


def finish(base: Mix, records: list[Record], poisoned: frozenset[str], **extra: Any) -> AttackMix:
    """An `AttackMix` whose manifest is the base mix's plus the trained records' ids and digests."""
    manifest = {**base.manifest, **data_manifest(records), "poisoned_ids": sorted(poisoned), **extra}
    return AttackMix(records, poisoned, manifest)


def split_draw(pool: list[Record], benign: list[Record], data: AttackData, what: str) -> tuple[list[Record], ...]:
    """(round(p*n) records of `pool`, the rest of n from `benign`), drawn without replacement like the mix."""
    n_p = harmful_count(data.n, data.p)
    rng = random.Random(data.seed)
    chosen = sample(pool, n_p, rng, what) if n_p else []
    rest = sample(benign, data.n - n_p, rng, "benign") if data.n - n_p else []
    return chosen, rest


ATTACKS: Registry[Attack] = Registry("attack")


def register(cls: type[Attack]) -> type[Attack]:
    """Class decorator: register one instance of `cls` under its `name`."""
    if not cls.name or not issubclass(cls.options_class, Knobs):
        raise TypeError(f"{cls.__name__} needs a name and an options_class extending Knobs")
    doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
    ATTACKS.add(cls.name, cls(), doc)
    return cls


def get_attack(name: str) -> Attack:
    return ATTACKS.get(name)


def attack_options(cfg: Config, name: str | None = None) -> Any:
    """The options of attack `name` (default: `user.attack`) from the section `attacks.<name>`."""
    name = name or cfg.user.attack
    attack = get_attack(name)
    options: Any = parse_section(attack.options_class, dict(cfg.attacks.get(name) or {}), f"attacks.{name}.")
    _check_knobs(options, name)
    attack.check(options)
    return options


def _check_knobs(k: Knobs, name: str) -> None:
    if k.lr_multiplier <= 0:
        raise BnrError(f"attacks.{name}.lr_multiplier must be > 0 (got {k.lr_multiplier})")
    if k.epochs is not None and k.epochs <= 0:
        raise BnrError(f"attacks.{name}.epochs must be > 0 or null (got {k.epochs})")
    if k.batch_size is not None and k.batch_size < 1:
        raise BnrError(f"attacks.{name}.batch_size must be >= 1 or null (got {k.batch_size})")


def vocabulary(cfg: Config, chosen: Vocabulary) -> Literal["text", "toy"]:
    """`toy` when chosen, or `auto` and the user's data is the toy world's; else `text`."""
    if chosen != "auto":
        return chosen
    sources = {cfg.user.benign_data.source, cfg.user.harmful_data.source}
    return "toy" if "toy" in sources else "text"


def train_config(train: TrainConfig, knobs: Knobs) -> TrainConfig:
    """`user.train` with the attack's knobs applied."""
    return dataclasses.replace(
        train,
        lr=train.lr * knobs.lr_multiplier,
        epochs=train.epochs if knobs.epochs is None else knobs.epochs,
        batch_size=train.batch_size if knobs.batch_size is None else knobs.batch_size,
    )


def attack_key(cfg: Config) -> dict[str, Any]:
    """What the attack adds to the UserLoRA's stage key: nothing for the default attack at default options."""
    name = cfg.user.attack
    options = dataclasses.asdict(attack_options(cfg))
    if name == DEFAULT_ATTACK and options == dataclasses.asdict(get_attack(name).options_class()):
        return {}
    return {"attack": name, "attack_options": options}


def load_pool(data: DataConfig) -> list[Record]:
    from bnr.data.sources import load_records

    return load_records(data)


def build_attack_mix(cfg: Config, benign: list[Record], harmful: list[Record]) -> AttackMix:
    """The user's training mix of `cfg` under its attack (`user.attack`, options `attacks.<name>`)."""
    attack = get_attack(cfg.user.attack)
    options = attack_options(cfg)
    voc = vocabulary(cfg, getattr(options, "vocabulary", "auto"))
    data = AttackData(benign, harmful, cfg.user.n, cfg.user.p, cfg.seed, voc)
    result = attack.mix(data, options)
    manifest = {**result.manifest, "attack": attack.name, "attack_options": dataclasses.asdict(options)}
    return AttackMix(result.records, result.poisoned, manifest)


@register_validator
def _check_attack_sections(cfg: Config) -> None:
    get_attack(cfg.user.attack)
    for key in cfg.attacks:
        if key not in ATTACKS:
            raise BnrError(f"unknown config key 'attacks.{key}': no attack {key!r}; valid: {ATTACKS.names()}")
        attack_options(cfg, key)
