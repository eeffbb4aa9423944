"""`antidote`: after plain LoRA fine-tuning, prune the UserLoRA weights that matter most on harmful data.

Source: T. Huang, G. Bhattacharya, P. Joshi, J. Kimball, L. Liu, "Antidote: Post-fine-tuning Safety Alignment
for Large Language Models against Harmful Fine-tuning" (arXiv 2408.09600, 2024); repository
git-disl/Antidote (script/finetune/antidote_poison_ratio.sh) and the same code in SeokilHam/Buffer-and-Reinforce
(trainer.py `AntidoteTrainer.save_mask`, utils.py `prune_wanda_outlier`, script/finetune/antidote.sh).

Method (as the reference code runs it, `full_finetuning=False`): the fine-tuned model (base + UserLoRA, eval
mode) reads a harmful re-alignment set (harmful prompt -> harmful answer); for every LoRA factor layer (lora_A:
r x d_in, lora_B: d_out x r) the Wanda score of weight (i, j) is |W_ij| * ||X_j||_2, X_j = that layer's input
feature j over all tokens of the set. In each row the `ratio` fraction of highest-scoring weights (the harmful
ones) is set to zero: a row of c columns loses exactly c - floor(c * (1 - ratio)) weights, as the reference's
per-row mask (`sort` ascending, keep the first int(c * (1 - ratio))). Pruning acts on the LoRA factors, not on the
merged delta or the base: the deliverable is the UserLoRA with pruned A and B, a PEFT adapter of the same rank.

Deviations: the re-alignment set defaults to the provider's harmful set (`buffer.data`; the reference reads
BeaverTails harmful QA), at most `n` records of it drawn with the job's seed (the reference: the first 2000, 1000
in the Buffer-and-Reinforce runs); the set is read in batches with padding masked out (the reference uses batch
size 1, so the sums are the same); the scores use the plain sum of squares over tokens (the reference's running
mean over samples rescales every column of a layer alike, so each row's ranking is the same). Ties keep column
order (a stable sort, as the reference). Defaults: ratio 0.1 and n 2000 are Antidote's released script's; the
Buffer-and-Reinforce comparison ran ratio 0.05 with 1000 samples.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bnr.config import DataConfig
from bnr.data.records import Record
from bnr.data.sources import load_records
from bnr.defenses.base import Defense, UserJob, from_section, register
from bnr.defenses.edit import write_edited_adapter
from bnr.errors import BnrError
from bnr.lora_files import LoraModule, read_lora


@dataclass
class AntidoteOptions:
    """`ratio`: fraction of each factor row pruned (highest Wanda scores); `n`: at most this many re-alignment
    records; `data`: the re-alignment set (default: the provider's harmful set `buffer.data`); `batch_size`."""

    ratio: float = 0.1
    n: int = 2000
    data: DataConfig | None = from_section("buffer.data")
    batch_size: int = 8

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise BnrError(f"defenses.antidote.ratio must be in [0, 1) (got {self.ratio})")
        if self.n < 1:
            raise BnrError(f"defenses.antidote.n must be >= 1 (got {self.n})")
        if self.batch_size < 1:
            raise BnrError(f"defenses.antidote.batch_size must be >= 1 (got {self.batch_size})")


def pruned_per_row(columns: int, ratio: float) -> int:
    """How many weights a row of `columns` loses (the reference keeps the int(c * (1 - ratio)) lowest)."""
    return columns - math.floor(columns * (1.0 - ratio) + 1e-9)


def prune_mask(score: Tensor, ratio: float) -> Tensor:
    """Boolean mask, True where a weight is pruned: in each row the `pruned_per_row` highest scores."""
    k = pruned_per_row(score.shape[1], ratio)
    mask = torch.zeros_like(score, dtype=torch.bool)
    if k:
        order = torch.sort(score, dim=1, stable=True).indices
        mask.scatter_(1, order[:, score.shape[1] - k :], True)
    return mask


class _InputNorms:
    """Forward hooks accumulating, per input feature of each hooked Linear, the sum of squares over real tokens."""

    def __init__(self, layers: dict[str, torch.nn.Linear]) -> None:
        self.sums: dict[str, Tensor] = {}
        self.token_mask: Tensor | None = None
        self.handles = [layer.register_forward_hook(self._hook(name)) for name, layer in layers.items()]

    def _hook(self, name: str) -> Any:
        def hook(module: torch.nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            x = inputs[0].detach().float()
            if self.token_mask is not None:
                x = x * self.token_mask.to(x.device).unsqueeze(-1)
            sq = x.pow(2).reshape(-1, x.shape[-1]).sum(0).cpu()
            self.sums[name] = self.sums.get(name, torch.zeros_like(sq)) + sq

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def input_norms(job: UserJob, user_run: Path, records: list[Record]) -> dict[str, Tensor]:
    """`"<module>.A"` / `"<module>.B"` -> ||X_j||_2 of that factor layer's inputs on `records`."""
    from bnr import adapters
    from bnr.data.tokenize import collate, encode_records
    from bnr.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(job.cfg.model)
    model = adapters.attach_frozen(model, user_run, adapters.USER, "separate")
    model.eval()
    layers = {}
    for name, (a, b) in adapters.lora_layers(model, adapters.USER).items():
        layers[f"{name}.A"], layers[f"{name}.B"] = a, b
    norms = _InputNorms(layers)
    examples = encode_records(tokenizer, records, job.cfg.template, job.cfg.max_length)
    device = next(model.parameters()).device
    bs = job.options.batch_size
    try:
        with torch.no_grad():
            for i in range(0, len(examples), bs):
                batch = {k: v.to(device) for k, v in collate(examples[i : i + bs], tokenizer.pad_token_id).items()}
                norms.token_mask = batch["attention_mask"]
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        norms.remove()
    return {name: s.sqrt() for name, s in norms.sums.items()}


def prune_adapter(
    modules: dict[str, LoraModule], norms: dict[str, Tensor], ratio: float
) -> tuple[dict[str, LoraModule], dict[str, int]]:
    """(every module with pruned A and B, number of weights pruned per module)."""
    out, counts = {}, {}
    for name, m in modules.items():
        pruned = {}
        for which, W in (("A", m.A), ("B", m.B)):
            mask = prune_mask(W.float().abs() * norms[f"{name}.{which}"].reshape(1, -1), ratio)
            pruned[which] = W.masked_fill(mask, 0)
            counts[f"{name}.{which}"] = int(mask.sum())
        out[name] = LoraModule(A=pruned["A"], B=pruned["B"], scaling=m.scaling)
    return out, counts


@register
class Antidote(Defense):
    """Antidote (Huang et al. 2025): prune the UserLoRA weights with the largest Wanda scores on harmful data"""

    name = "antidote"
    options_class = AntidoteOptions
    trains_like = "sft"

    def _records(self, job: UserJob) -> list[Record]:
        opts: AntidoteOptions = job.options
        assert opts.data is not None  # filled in by options_for
        records = load_records(opts.data)
        if not records:
            raise BnrError("antidote: the re-alignment set is empty; set defenses.antidote.data")
        if len(records) > opts.n:
            records = random.Random(f"antidote-{job.seed}").sample(records, opts.n)
        return records

    def check(self, job: UserJob) -> list[str]:
        return [f"antidote: {len(self._records(job))} re-alignment samples, prune ratio {job.options.ratio}"]

    def finalize(self, job: UserJob, user_run: Path) -> Path:
        opts: AntidoteOptions = job.options
        records = self._records(job)
        factors = read_lora(user_run)
        pruned, counts = prune_adapter(factors.modules, input_norms(job, user_run, records), opts.ratio)
        total = sum(m.A.numel() + m.B.numel() for m in factors.modules.values())
        notes = {
            "realignment_samples": len(records),
            "realignment_ids": [r.id for r in records],
            "pruned": counts,
            "pruned_fraction": sum(counts.values()) / total,
        }
        return write_edited_adapter(job, user_run, self.name, pruned, defense_notes=notes)
