"""`security-vectors`: a provider adapter that has already learned the harmful behaviour, frozen and active while
the user fine-tunes, dropped afterwards.

Source: X. Zhou, Y. Lu, R. Ma, Y. Wei, T. Gui, Q. Zhang, X. Huang, "Making Harmful Behaviors Unlearnable for Large
Language Models" (Security Vectors), Findings of ACL 2024 (arXiv 2311.02105); reference code in the Booster lineage's
`SecurityVectorTrainer` as released in SeokilHam/Buffer-and-Reinforce (trainer.py, train.py,
script/finetune/train_security_vector.sh).

Provider stage (`security-vector`, registered here, built once per distinct configuration by `pipeline` and
`sweep`): a LoRA trained on the provider's harmful set with cross-entropy plus `kl_weight` (0.01, as released)
times the token-mean KL(base || model) of next-token distributions on a benign micro-batch drawn beside each
harmful one (only positions with a label). The KL teacher is the same model with its adapter switched off
(`adapters.disabled`), not a second copy. Data and training default to the `buffer` section (the released
script: LAT harmful, 5000 samples, lr 1e-5, 3 epochs, batch 4 x 2 - the paper preset's buffer settings) and
the benign set to `reinforce.benign_data`.

User job: `prepare_model` attaches the vector frozen (`mode`: `merged` into the weights as the released
`train.py` does with `--lora_folder`, or `separate` as a frozen active adapter) under a fresh UserLoRA; only the
UserLoRA is saved, so the deliverable is the UserLoRA alone and the vector is absent from it.

Deviations: (1) the released trainer zeroes a step's gradients that contain NaN/inf; here a non-finite loss stops
training with an error like every stage (no silent skip). (2) The benign stream is the provider's benign set
(the released code draws `poison_ratio=0` samples of the user task's data set, gsm8k, which a provider does not
have). (3) The KL is averaged over label positions of the benign batch, as released; the paper's consistency
loss is the same KL written per sample.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from bnr import adapters
from bnr.config import Config, DataConfig, LoraConfig, TrainConfig
from bnr.data.mix import data_manifest
from bnr.defenses.base import Defense, UserJob, add_user_adapter, options_for, register
from bnr.defenses.streams import IndexedStream, stream_for
from bnr.errors import BnrError
from bnr.locations import output, without_locations
from bnr.runs.providers import Provider, register_provider

NAME = "security-vectors"
ARTIFACT = "security-vector"
ADAPTER = "security_vector"


@dataclass
class SecurityVectorsOptions:
    """Provider stage: `data` / `n` (harmful set, default `buffer.data` / `buffer.n`), `benign_data` / `n_benign`
    (KL batches, default `reinforce.benign_data`, all), `kl_weight`, `lora` / `train` (default `buffer.lora` /
    `buffer.train`), `out` (its run). User job: `mode` (merged into the weights or a separate frozen adapter)."""

    kl_weight: float = 0.01
    data: DataConfig | None = None
    n: int | None = None
    benign_data: DataConfig | None = None
    n_benign: int | None = None
    lora: LoraConfig | None = None
    train: TrainConfig | None = None
    mode: Literal["merged", "separate"] = "merged"
    out: str = output("runs/security-vector")

    def __post_init__(self) -> None:
        if self.kl_weight < 0:
            raise BnrError(f"defenses.{NAME}.kl_weight must be >= 0 (got {self.kl_weight})")
        for key in ("n", "n_benign"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise BnrError(f"defenses.{NAME}.{key} must be >= 1 (got {value})")


def resolved(cfg: Config) -> SecurityVectorsOptions:
    """The options with every provider default filled in from the `buffer` / `reinforce` sections."""
    o: SecurityVectorsOptions = options_for(cfg, NAME)
    b = cfg.buffer
    return dataclasses.replace(
        o,
        data=o.data or b.data,
        n=o.n if o.n is not None else b.n,
        benign_data=o.benign_data or cfg.reinforce.benign_data,
        lora=o.lora or b.lora,
        train=o.train or b.train,
    )


def kl_to_base(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token-mean KL(base || model) of next-token distributions over the label positions of `batch`; the base
    is `model` with its adapters switched off."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    logits = model(**inputs).logits[:, :-1].float()
    with torch.no_grad(), adapters.disabled(model):
        teacher = model(**inputs).logits[:, :-1].float()
    mask = batch["labels"][:, 1:].ne(-100).to(logits.dtype)
    token_kl = F.kl_div(F.log_softmax(logits, -1), F.softmax(teacher, -1), reduction="none").sum(-1)
    return (token_kl * mask).sum() / mask.sum().clamp_min(1.0)


def kl_regularised_loss(benign: IndexedStream, weight: float, grad_accum: int, pad_id: int) -> Any:
    """Cross-entropy on the harmful micro-batch + `weight` x KL to the base on the benign micro-batch drawn
    beside it (benign batch number = micro-batches done, so resume needs no state)."""

    def loss_fn(model: Any, batch: dict[str, torch.Tensor], ctx: Any) -> torch.Tensor:
        ce = model(**batch).loss
        side = benign.collated(ctx.step * grad_accum + ctx.micro, pad_id, batch["input_ids"].device)
        return ce + weight * kl_to_base(model, side)

    return loss_fn


def train_security_vector(cfg: Config) -> Path:
    """The provider stage's recipe: write the security-vector run at `defenses.security-vectors.out`."""
    from bnr.models import load_model_and_tokenizer
    from bnr.runs.fit import fit, load_sampled
    from bnr.runs.opening import manifest_for, open_run
    from bnr.seeding import seed_everything
    from bnr.train import TrainHooks

    o = resolved(cfg)
    assert o.data and o.benign_data and o.lora and o.train
    harmful = load_sampled(o.data, o.n, cfg.seed, "security vector harmful")
    writer = open_run(cfg, o.out, ARTIFACT)
    seed_everything(cfg.seed)  # the adapter's initialisation
    model, tokenizer = load_model_and_tokenizer(cfg.model, for_training=True)
    model = adapters.add_adapter(model, ADAPTER, o.lora, base_name=cfg.model.name_or_path)
    adapters.set_active(model, active=[ADAPTER], trainable=[ADAPTER])
    benign = stream_for(cfg, tokenizer, o.benign_data, o.n_benign, o.train, cfg.seed + 1, "security vector benign")
    loss = kl_regularised_loss(benign, o.kl_weight, o.train.grad_accum, tokenizer.pad_token_id)
    training = fit(
        model, tokenizer, harmful, cfg, o.train, writer, ARTIFACT, hooks_for=lambda _: TrainHooks(loss_fn=loss)
    )
    adapters.save_adapter(model, ADAPTER, writer.tmp)
    manifest = manifest_for(
        cfg,
        parents=[],
        data={**data_manifest(harmful, role="harmful"), "benign_kl": len(benign.examples)},
        training=training,
        adapter=ADAPTER,
        kl_weight=o.kl_weight,
        contains_buffer=False,
    )
    return writer.finalize(manifest)


def _place(cfg: Config, path: str) -> Config:
    section = {**dict(cfg.defenses.get(NAME) or {}), "out": path}
    return dataclasses.replace(cfg, defenses={**cfg.defenses, NAME: section})


def _key_extra(cfg: Config) -> dict[str, Any]:
    """The resolved provider options (without where it is written, and the user-job-only `mode`)."""
    return {k: v for k, v in without_locations(resolved(cfg)).items() if k != "mode"}


register_provider(
    Provider(
        ARTIFACT,
        "Security Vector: LoRA on harmful data, CE + KL to the base on benign batches (`defenses.security-vectors`)",
        f"defenses.{NAME}.out",
        ("buffer", "reinforce.benign_data"),  # its defaults; the resolved options enter through `extra`
        (),
        lambda cfg: resolved(cfg).out,
        _place,
        train_security_vector,
        _key_extra,
    )
)


@register
class SecurityVectors(Defense):
    """Security Vectors (Zhou et al. 2024): a harmful-trained adapter frozen during user training, dropped after"""

    name = NAME
    options_class = SecurityVectorsOptions
    train_artifacts = (ARTIFACT,)

    def prepare_model(self, job: UserJob, model: Any) -> Any:
        mode = job.options.mode
        model = adapters.attach_frozen(model, job.providers[ARTIFACT], ADAPTER, mode)
        job.notes["security_vector_mode"] = mode
        return add_user_adapter(job, model, [ADAPTER] if mode == "separate" else [])
