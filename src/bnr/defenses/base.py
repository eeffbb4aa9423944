"""The defense interface: one class per defense, hooks that the recipes call in a fixed order.

A defense is a subclass of `Defense` in its own module under `bnr.defenses`, registered by name with
`@register`. The recipes (`finetune`, `pipeline`, `sweep`, `validate`) never ask which defense they run; for
one user job they call, in this order:

1. `user_data(job, records) -> records` - add or filter the user's records (SafeInstruct adds refusal pairs).
   Runs on the sampled user mix (n records, round(p*n) harmful); what it returns is what is trained on.
2. `prepare_model(job, model) -> PeftModel` - attach frozen adapters to the freshly loaded base model and add
   the trainable UserLoRA. Must return a PeftModel holding adapter `adapters.USER` with exactly its LoRA
   weights trainable; use `add_user_adapter(job, model, frozen=[...])`, which calls `adapters.set_active`
   (the default attaches nothing).
3. `training_hooks(job, model, tokenizer, examples) -> bnr.train.TrainHooks` - seams of the one training loop:
   `batch_source` (e.g. a second data stream mixed in), `loss_fn` (e.g. cross-entropy plus a regularizer; see
   `bnr.train.cross_entropy_loss`) and `callbacks` (`bnr.train.StepCallback`: before / after each optimizer
   step, with `state_dict` for exact resume). The default is plain cross-entropy on `examples`.
4. `finalize(job, user_run) -> Path` - turn the complete UserLoRA run directory into the deliverable (merge,
   project, prune, perturb) and return its path: `user_run` itself, or a new run directory written at
   `job.final_out`. The deliverable is what `pipeline` and `sweep` evaluate. It must never contain the buffer.

Plus one check without models: `check(job) -> list[str]` (`bnr validate`): raise `BnrError` on a problem,
return lines worth printing (e.g. data counts).

Options: each defense declares `options_class`, a dataclass (the schema, defaults = the paper's). Values come
from the top-level config section `defenses.<name>` (YAML `defenses: {safeinstruct: {ratio: 0.2}}` or the
override `defenses.safeinstruct.ratio=0.2`); they are parsed with the root config's rules (unknown keys are
errors naming the full key), at load time for every listed defense. `job.options` holds the instance.

Provider artifacts: a defense lists the provider stages it needs by name - `train_artifacts` (needed to
train the UserLoRA, e.g. `buffer`) and `final_artifacts` (needed by finalize, e.g. `reinforce`). Provider
stages are registered in `bnr.runs.providers` (buffer, reinforce; a defense module may register more),
each with its config sections, parents and recipe, so `pipeline` and `sweep` build each distinct one once and
reuse it while its config and parents are unchanged. `job.providers[name]` is the artifact's run directory.

Stage reuse: the stage keys hold the defense's resolved options (`bnr.orchestrate.userjob`), so everything a
hook reads beyond the `user` section and its provider artifacts must be an option. An option whose default is
another section's value is declared with `from_section("reinforce.refusal_data")` (default None: `options_for`
fills in that section's value when the options are read from a loaded config, so changing that section redoes
exactly the stages whose options read it); `finalize_only=True` keeps it out of the UserLoRA's key (bnr's
`merge`). `trains_like` names a defense whose hooks 1-3 are the same as this one's (`bnr-buffer-only` trains like
`bnr`), so a sweep trains their shared UserLoRA once (its options then must only shape finalize); leave it None
unless that is exactly true. A change of finalize's code that makes something else from the same options is an
option too: a `revision` field with `init=False` (`bnr-calibrated`), bumped with the code.

A new defense: a module `bnr/defenses/mydefense.py` with

    @dataclass
    class MyOptions:
        weight: float = 0.1

    @register
    class MyDefense(Defense):
        '''One line for `bnr ls defenses`. Paper, repository, deviations.'''
        name = "mine"
        options_class = MyOptions
        def training_hooks(self, job, model, tokenizer, examples): ...

and its module name added to `bnr.defenses.MODULES`.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from bnr import adapters
from bnr.config import Config, parse_section, register_validator
from bnr.data.records import Record
from bnr.errors import BnrError
from bnr.models import serving_name
from bnr.registry import Registry

# provider artifact names (the stages in bnr.defenses.providers) are the names of the adapters they hold
BUFFER, REINFORCE = adapters.BUFFER, adapters.REINFORCE


@dataclass
class NoOptions:
    """This defense has no options."""


@dataclass
class UserJob:
    """Everything the hooks of one user job may read: the resolved config, the defense's options, the
    provider artifacts it declared (name -> run directory) and where finalize writes. Hooks put what the
    run should record about them (data added, layers changed) into `notes`; it lands in the manifests."""

    cfg: Config
    defense: Defense
    options: Any
    providers: dict[str, Path]
    final_out: Path
    notes: dict[str, Any] = field(default_factory=dict)
    work_dir: Path | None = None  # the user run's partial folder while it trains; files written there land in the run

    @property
    def seed(self) -> int:
        return self.cfg.seed


class Defense:
    """Base class: every hook's default is plain LoRA SFT (no data change, no frozen adapter, cross-entropy,
    the UserLoRA is the deliverable). Subclasses set the class attributes and override hooks."""

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    options_class: ClassVar[type] = NoOptions
    train_artifacts: ClassVar[tuple[str, ...]] = ()
    final_artifacts: ClassVar[tuple[str, ...]] = ()
    trains_like: ClassVar[str | None] = None
    # the prose name in plots and reports ("Buffer-and-Reinforce"); "" takes the description (the docstring's
    # first line) up to its first " (" or ":" (`defense_style`)
    title: ClassVar[str] = ""
    # its colour in every plot (a matplotlib colour); "" takes the built-in one (`COLOURS`), else a fixed pick
    colour: ClassVar[str] = ""

    @property
    def requires(self) -> tuple[str, ...]:
        """All provider artifacts this defense needs, training first, without repeats."""
        return tuple(dict.fromkeys(self.train_artifacts + self.final_artifacts))

    def check(self, job: UserJob) -> list[str]:
        """Check the job without loading a model (`bnr validate`); return lines worth printing."""
        return []

    def user_data(self, job: UserJob, records: list[Record]) -> list[Record]:
        """Hook 1: the records to train on (default: the user's mix unchanged)."""
        return records

    def prepare_model(self, job: UserJob, model: Any) -> Any:
        """Hook 2: attach frozen adapters, add the trainable UserLoRA (default: just the UserLoRA)."""
        return add_user_adapter(job, model)

    def training_hooks(self, job: UserJob, model: Any, tokenizer: Any, examples: list[Any]) -> Any:
        """Hook 3: a `bnr.train.TrainHooks` (default: cross-entropy on `examples`, no callbacks)."""
        from bnr.train import TrainHooks

        return TrainHooks()

    def finalize(self, job: UserJob, user_run: Path) -> Path:
        """Hook 4: the deliverable's path (default: the UserLoRA run itself)."""
        return user_run


DEFENSES: Registry[Defense] = Registry("defense")
_CANONICAL: dict[str, str] = {}


def register(cls: type[Defense]) -> type[Defense]:
    """Class decorator: register one instance of `cls` under its `name` and its `aliases`."""
    if not cls.name or not dataclasses.is_dataclass(cls.options_class):
        raise TypeError(f"{cls.__name__} needs a name and a dataclass options_class")
    instance = cls()
    doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
    DEFENSES.add(cls.name, instance, doc)
    _CANONICAL[cls.name] = cls.name
    for alias in cls.aliases:
        DEFENSES.add(alias, instance, f"alias of {cls.name}")
        _CANONICAL[alias] = cls.name
    return cls


# one colour per method in every plot bnr draws (sweeps, overview, attack search); the base model is black
COLOURS = {
    "sft": "tab:red",
    "bnr": "tab:blue",
    "bnr-buffer-only": "tab:green",
    "bnr-buffer-only-full": "#98df8a",
    "bnr-reinforce-only": "tab:orange",
    "bnr-calibrated": "tab:purple",
    "antidote": "tab:brown",
    "asft": "tab:pink",
    "booster": "tab:olive",
    "ldifs": "tab:cyan",
    "lisa": "#aec7e8",
    "panacea": "#ffbb78",
    "repnoise": "#c5b0d5",
    "safeinstruct": "#c49c94",
    "safelora": "#f7b6d2",
    "security-vectors": "#dbdb8d",
    "t-vaccine": "#9edae5",
    "vaccine": "tab:gray",
}
SPARE_COLOURS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#5254a3", "#8ca252", "#bd9e39")


def defense_style(name: str) -> tuple[str, str]:
    """(prose name, colour) of defense `name` (or an alias) in plots: its class's `title` (else its description up
    to the first " (" or ":"), and its `colour` (else the built-in `COLOURS`, else a pick from `SPARE_COLOURS` fixed
    by its name), so a method looks the same in every plot."""
    canon = canonical_name(name)
    cls = type(get_defense(name))
    title = cls.title or re.split(r" \(|:", DEFENSES.describe().get(canon, canon), maxsplit=1)[0].strip() or canon
    colour = cls.colour or COLOURS.get(canon) or SPARE_COLOURS[zlib.crc32(canon.encode()) % len(SPARE_COLOURS)]
    return title, colour


def get_defense(name: str) -> Defense:
    """The defense registered as `name` (or an alias); unknown names list the valid ones."""
    return DEFENSES.get(name)


def canonical_name(name: str) -> str:
    get_defense(name)
    return _CANONICAL[name]


DEFAULT_FROM = "bnr_default_from"  # field metadata: the config section an option defaults to
FINALIZE_ONLY = "bnr_finalize_only"  # field metadata: the option shapes finalize only (not the UserLoRA's key)


def from_section(path: str, *, finalize_only: bool = False) -> Any:
    """An option field whose default is the config value at `path` (dotted, e.g. `"buffer.data"`): None in the
    schema, filled in by `options_for` from the loaded config."""
    return field(default=None, metadata={DEFAULT_FROM: path, FINALIZE_ONLY: finalize_only})


def option_sources(name: str, *, training: bool = False) -> set[str]:
    """The config sections the options of defense `name` default to (dotted); with `training`, only those of the
    options that shape its UserLoRA (not `finalize_only`)."""
    fields = dataclasses.fields(get_defense(name).options_class)
    return {
        f.metadata[DEFAULT_FROM]
        for f in fields
        if f.metadata.get(DEFAULT_FROM) and not (training and f.metadata.get(FINALIZE_ONLY))
    }


def _config_value(cfg: Config, path: str) -> Any:
    node: Any = cfg
    for part in path.split("."):
        node = getattr(node, part)
    return copy.deepcopy(node)


def options_for(cfg: Config, name: str) -> Any:
    """The options dataclass of defense `name`, filled from `defenses.<name>` (or its alias's section), its
    cross-section defaults (`from_section`) resolved from `cfg`."""
    defense = get_defense(name)
    canon = canonical_name(name)
    given = [k for k in cfg.defenses if k in DEFENSES and canonical_name(k) == canon]
    if len(given) > 1:
        raise BnrError(f"options for defense {canon!r} given under several names {given}; use defenses.{canon}")
    key = given[0] if given else canon
    values = dict(cfg.defenses.get(key) or {})
    fixed = sorted(f.name for f in dataclasses.fields(defense.options_class) if not f.init and f.name in values)
    if fixed:  # e.g. a `revision`: set by the code, never by a config
        keys = ", ".join(f"defenses.{key}.{name}" for name in fixed)
        raise BnrError(f"unknown config key(s): {keys}; see `bnr validate` or the presets for valid keys")
    options: Any = parse_section(defense.options_class, values, f"defenses.{key}.")
    for f in dataclasses.fields(options):
        source = f.metadata.get(DEFAULT_FROM)
        if source and getattr(options, f.name) is None:
            object.__setattr__(options, f.name, _config_value(cfg, source))  # that section is validated already
    return options


@register_validator
def _check_defense_sections(cfg: Config) -> None:
    for key in cfg.defenses:
        if key not in DEFENSES:
            raise BnrError(f"unknown config key 'defenses.{key}': no defense {key!r}; valid: {DEFENSES.names()}")
        options_for(cfg, key)


def add_user_adapter(job: UserJob, model: Any, frozen: list[str] | None = None) -> Any:
    """Add the trainable UserLoRA (`user.lora`) and activate it beside the `frozen` adapters already attached
    (exactly the UserLoRA's weights require grad; `adapters.set_active` asserts it)."""
    cfg = job.cfg
    model = adapters.add_adapter(model, adapters.USER, cfg.user.lora, base_name=serving_name(cfg.model))
    adapters.set_active(model, active=[*(frozen or []), adapters.USER], trainable=[adapters.USER])
    return model


def attach_buffer(job: UserJob, model: Any) -> tuple[Any, list[str]]:
    """Attach the provider's BufferLoRA frozen (`user.buffer_mode`: merged into the weights or a separate
    frozen adapter); returns the model and the adapters to keep active under the UserLoRA."""
    mode = job.cfg.user.buffer_mode
    model = adapters.attach_frozen(model, job.providers[BUFFER], adapters.BUFFER, mode)
    return model, [adapters.BUFFER] if mode == "separate" else []
