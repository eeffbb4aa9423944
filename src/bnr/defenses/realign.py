"""Shared machinery of the alignment-stage defenses (Vaccine, Booster, RepNoise, T-Vaccine): a provider stage that
re-aligns the served base with a defense-specific loss, and a user job of plain SFT on the re-aligned base.

Provider stage (one per defense, registered by its module with `register_realign_provider`, built once per
distinct configuration by `pipeline` and `sweep` like the buffer): a LoRA (`REALIGN`) trained on the provider's
alignment set (harmful prompt -> refusal; default `reinforce.refusal_data`, `reinforce.n_refusal`) with the
defense's loss through the one training loop's seams (`loss_fn`, `callbacks`), with `reinforce.lora` /
`reinforce.train` unless the defense's options give `lora` / `train`. The run directory is a standard PEFT
adapter: the re-aligned base is the served base with it merged.

User job (`RealignedBase`): `prepare_model` merges the re-alignment LoRA into the base weights (frozen, zero cost
per step) and adds the trainable UserLoRA, trained with plain cross-entropy; `finalize` writes the deliverable as
one PEFT adapter holding both deltas (dA + dU, a rank r_A + r_U LoRA in factor space, `bnr.merge` with the plain
sum at strength 1), so `PeftModel.from_pretrained(base, final)` is exactly the re-aligned base plus the UserLoRA.

Deviation shared by all four: the papers align a pre-trained (not yet aligned) model on BeaverTails refusals; here
the provider already serves an aligned base, so the defense's alignment pass runs on top of it (a re-alignment),
with the preset's alignment-stage recipe (`reinforce.train`) rather than the papers' (lr 5e-4 to 1e-3, 20-50
epochs on 5000 samples), which the options `train` / `n` restore.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bnr import adapters
from bnr.config import Config, DataConfig, LoraConfig, TrainConfig
from bnr.defenses.base import Defense, UserJob, add_user_adapter, options_for
from bnr.errors import BnrError
from bnr.locations import output, without_locations
from bnr.runs.providers import Provider, register_provider

log = logging.getLogger(__name__)
REALIGN = "realign"  # the adapter name of every re-alignment LoRA


@dataclass
class RealignOptions:
    """Provider stage: `data` / `n` (alignment set: harmful prompt -> refusal; default `reinforce.refusal_data` /
    `reinforce.n_refusal`), `lora` / `train` (default `reinforce.lora` / `reinforce.train`), `out` (its run)."""

    data: DataConfig | None = None
    n: int | None = None
    lora: LoraConfig | None = None
    train: TrainConfig | None = None
    out: str = output("runs/realign")

    def _check_counts(self, name: str, *keys: str) -> None:
        for key in ("n", *keys):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise BnrError(f"defenses.{name}.{key} must be >= 1 (got {value})")


def resolve(cfg: Config, name: str) -> Any:
    """The options of defense `name` with the provider defaults filled in from `reinforce` (alignment set, LoRA,
    recipe) and, for options with `harmful_data` / `n_harmful`, from `buffer` (the provider's harmful set)."""
    o = options_for(cfg, name)
    r = cfg.reinforce
    filled: dict[str, Any] = {
        "data": o.data or r.refusal_data,
        "n": o.n if o.n is not None else r.n_refusal,
        "lora": o.lora or r.lora,
        "train": o.train or r.train,
    }
    if hasattr(o, "harmful_data"):
        filled["harmful_data"] = o.harmful_data or cfg.buffer.data
        filled["n_harmful"] = o.n_harmful if o.n_harmful is not None else cfg.buffer.n
    return dataclasses.replace(o, **filled)


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The transformer blocks of a causal LM (Llama-family layout `model.layers`), under any PEFT wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", None)
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        raise BnrError(f"{type(base).__name__} has no decoder `layers`; these defenses need a Llama-style causal LM")
    return list(layers)


def block_modules(model: Any, part: str) -> list[torch.nn.Module]:
    """Submodule `part` (`self_attn`, `mlp`) of every decoder block, in layer order."""
    layers = decoder_layers(model)
    if not all(hasattr(layer, part) for layer in layers):
        raise BnrError(f"the decoder blocks of this model have no `{part}` module; use a Llama-style causal LM")
    return [getattr(layer, part) for layer in layers]


def _first(output: Any) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def captured(modules: Sequence[torch.nn.Module]) -> Iterator[list[Tensor]]:
    """The (first) outputs of `modules` in the next forward, in the order of `modules`."""
    slots: list[Tensor | None] = [None] * len(modules)

    def hook_for(i: int) -> Callable[..., None]:
        def hook(_module: torch.nn.Module, _args: Any, output: Any) -> None:
            slots[i] = _first(output)

        return hook

    out: list[Tensor] = []
    handles = [m.register_forward_hook(hook_for(i)) for i, m in enumerate(modules)]
    try:
        yield out
    finally:
        for h in handles:
            h.remove()
    out.extend(t for t in slots if t is not None)


def decoder_norm(model: Any) -> torch.nn.Module:
    """The final norm of a Llama-style decoder (applied before the output head)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", None)
    norm = getattr(decoder, "norm", None)
    if not isinstance(norm, torch.nn.Module):
        raise BnrError(f"{type(base).__name__} has no decoder `norm`; this defense needs a Llama-style causal LM")
    return norm


def global_norm(tensors: Sequence[Tensor]) -> Tensor:
    """The 2-norm of all `tensors` taken together (in float32)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors]))


def harmful_stream(cfg: Config, tokenizer: Any, o: Any, what: str) -> Any:
    """The provider's harmful set of options `o` (`harmful_data`, `n_harmful`) as a seeded side stream of
    `o.train.batch_size` micro-batches (`bnr.defenses.streams.IndexedStream`)."""
    from bnr.defenses.streams import stream_for

    return stream_for(cfg, tokenizer, o.harmful_data, o.n_harmful, o.train, cfg.seed + 1, what)


TrainHooksFor = Callable[[Config, Any, Any, Any], Any]
"""(cfg, model with the trainable REALIGN LoRA, tokenizer, resolved options) -> `bnr.train.TrainHooks`."""


def train_realignment(cfg: Config, name: str, stage: str, hooks_for: TrainHooksFor) -> Path:
    """The provider recipe of every alignment-stage defense: the REALIGN LoRA on the alignment set with the hooks
    `hooks_for` gives, written at `defenses.<name>.out`."""
    from bnr.data.mix import data_manifest
    from bnr.models import load_model_and_tokenizer, serving_name
    from bnr.runs.fit import fit, load_sampled
    from bnr.runs.opening import manifest_for, open_run
    from bnr.seeding import seed_everything

    o = resolve(cfg, name)
    records = load_sampled(o.data, o.n, cfg.seed, f"{name} alignment set")
    writer = open_run(cfg, o.out, stage)
    seed_everything(cfg.seed)  # the adapter's initialisation
    model, tokenizer = load_model_and_tokenizer(cfg.model, for_training=True)
    model = adapters.add_adapter(model, REALIGN, o.lora, base_name=serving_name(cfg.model))
    adapters.set_active(model, active=[REALIGN], trainable=[REALIGN])
    hooks = hooks_for(cfg, model, tokenizer, o)
    training = fit(model, tokenizer, records, cfg, o.train, writer, stage, hooks_for=lambda _: hooks)
    adapters.save_adapter(model, REALIGN, writer.tmp)
    options = {k: v for k, v in without_locations(o).items() if k not in ("data", "lora", "train")}
    manifest = manifest_for(
        cfg,
        parents=[],
        data=data_manifest(records, role="alignment"),
        training=training,
        adapter=REALIGN,
        defense=name,
        options=options,
        contains_buffer=False,
    )
    return writer.finalize(manifest)


def register_realign_provider(name: str, stage: str, doc: str, hooks_for: TrainHooksFor) -> None:
    """Register the provider stage `stage` of defense `name` (key: `reinforce`, `buffer` and the resolved options)."""

    def place(cfg: Config, path: str) -> Config:
        section = {**dict(cfg.defenses.get(name) or {}), "out": path}
        return dataclasses.replace(cfg, defenses={**cfg.defenses, name: section})

    def key_extra(cfg: Config) -> dict[str, Any]:
        return without_locations(resolve(cfg, name))

    register_provider(
        Provider(
            stage,
            doc,
            f"defenses.{name}.out",
            ("reinforce", "buffer"),  # its defaults; the resolved options enter through `extra`
            (),
            lambda cfg: resolve(cfg, name).out,
            place,
            lambda cfg: train_realignment(cfg, name, stage, hooks_for),
            key_extra,
        )
    )


def sum_with_realignment(job: UserJob, user_run: Path, realign_run: Path) -> Path:
    """The deliverable: one PEFT adapter with dA + dU (factor space, exact), written at `job.final_out`."""
    from bnr.artifacts import read_manifest
    from bnr.lora_files import read_lora
    from bnr.merge import merge_factors, write_merged_adapter
    from bnr.runs.opening import manifest_for, open_run

    user = read_lora(user_run)
    result = merge_factors(user, read_lora(realign_run), method="naive", scale=1.0)
    cfg = dataclasses.replace(job.cfg, template=read_manifest(user_run).get("template", job.cfg.template))
    writer = open_run(cfg, str(job.final_out), "realigned")
    write_merged_adapter(result, writer.tmp, user.base_model_name_or_path)
    parents = [("user", str(user_run)), ("realign", str(realign_run))]
    return writer.finalize(manifest_for(cfg, parents=parents, data={}, contains_buffer=False))


class RealignedBase(Defense):
    """Base class of the alignment-stage defenses: subclasses set `name`, `options_class` and `train_artifacts =
    (their provider stage,)`; the user job is plain SFT on the re-aligned base and the deliverable holds both."""

    def prepare_model(self, job: UserJob, model: Any) -> Any:
        stage = self.train_artifacts[0]
        model = adapters.attach_frozen(model, job.providers[stage], REALIGN, "merged")
        job.notes["realigned_by"] = stage
        return add_user_adapter(job, model)

    def finalize(self, job: UserJob, user_run: Path) -> Path:
        return sum_with_realignment(job, user_run, job.providers[self.train_artifacts[0]])
