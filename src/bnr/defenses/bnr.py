"""Buffer-and-Reinforce and its two ablations, under the same names in every command.

- `bnr`: the UserLoRA is trained with the BufferLoRA frozen under it (`user.buffer_mode`: merged into the base
  weights, as the paper's code, or a separate frozen adapter); the buffer is then dropped and the ReinforceLoRA
  is merged into the UserLoRA with `merge.method` (default `qr`, the paper's soft projection; `naive` is the
  plain sum) at `merge.scale`, `merge.alpha`, `merge.tau`. The deliverable is the merged adapter.
- `bnr-buffer-only` (alias `buffer-only`): trained like `bnr`, the buffer dropped, no ReinforceLoRA: the
  deliverable is the UserLoRA at the strength `bnr` applies it, scale * dU (`defenses.bnr-buffer-only.scale`,
  default `merge.scale`; 1.0 = the UserLoRA as trained), so the pair isolates what the ReinforceLoRA adds.
- `bnr-buffer-only-full`: the same UserLoRA at full strength (dU as trained), the paper's BufferLoRA-only row
  (its code evaluates the buffer-trained UserLoRA with no merge and no halving).
- `bnr-reinforce-only` (alias `reinforce-only`): plain SFT UserLoRA (no buffer), then merged with the
  ReinforceLoRA exactly like `bnr`.

Source: S. Ham, J. Jang, W. Lee, C. Kim, "Jailbreak to Protect: Buffering and Reinforcing via Temporary
Jailbreaking for Safe Fine-Tuning in Large Language Models", arXiv 2605.24550 (ICML 2026); repository
SeokilHam/Buffer-and-Reinforce. Deviations (METHOD.md): the merge works in factor space and writes a
rank r_U + r_R PEFT adapter instead of a dense fp16 model; the effective-rank test uses UserLoRA's rank
(the released code compares with ReinforceLoRA's); the harmful count is round(p*n), not p*n - 1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnr.config import Config, MergeConfig
from bnr.defenses.base import (
    BUFFER,
    REINFORCE,
    Defense,
    UserJob,
    add_user_adapter,
    attach_buffer,
    from_section,
    register,
)
from bnr.errors import BnrError


def merge_reinforce(job: UserJob, user_run: Path) -> Path:
    """The `merge` recipe on (this job's UserLoRA, the provider's ReinforceLoRA) into `job.final_out`, with the
    defense's merge options (`defenses.<name>.merge`, default the `merge` section)."""
    from bnr.runs.merge import merge_run

    return merge_run(merge_config(job, user_run), own_user_run=True)


def merge_config(job: UserJob, user_run: Path) -> Config:
    """The job's config with its `merge` section set to the defense's merge options on (this job's UserLoRA, the
    provider's ReinforceLoRA) into `job.final_out`."""
    m = dataclasses.replace(
        job.options.merge, user=str(user_run), reinforce=str(job.providers[REINFORCE]), out=str(job.final_out)
    )
    return dataclasses.replace(job.cfg, merge=m)


@dataclass
class MergeOptions:
    """`merge`: how the ReinforceLoRA is merged into the UserLoRA (default: the `merge` section)."""

    merge: MergeConfig | None = from_section("merge", finalize_only=True)


def rescale_user(job: UserJob, user_run: Path, scale: float) -> Path:
    """The UserLoRA alone at `scale` * dU, written as a PEFT adapter run at `job.final_out` (no other input)."""
    from bnr.artifacts import read_manifest
    from bnr.lora_files import LoraModule, read_lora, write_lora
    from bnr.runs.opening import manifest_for, open_run

    lora = read_lora(user_run)
    modules = {n: LoraModule(m.A, m.B, m.scaling * scale) for n, m in lora.modules.items()}
    cfg = dataclasses.replace(job.cfg, template=read_manifest(user_run).get("template", job.cfg.template))
    writer = open_run(cfg, str(job.final_out), "rescale")
    write_lora(modules, writer.tmp, lora.base_model_name_or_path, lora.task_type)
    manifest = manifest_for(cfg, parents=[("user", str(user_run))], data={}, scale=scale, contains_buffer=False)
    return writer.finalize(manifest)


@dataclass
class BufferOnlyOptions:
    """`scale`: the deliverable is scale * dU (null: `merge.scale`, the strength `bnr` applies)."""

    scale: float | None = from_section("merge.scale", finalize_only=True)

    def __post_init__(self) -> None:
        if self.scale is not None and self.scale <= 0:
            raise BnrError(f"defenses.bnr-buffer-only.scale must be > 0 (got {self.scale})")


class _WithBuffer(Defense):
    train_artifacts = (BUFFER,)

    def prepare_model(self, job: UserJob, model: Any) -> Any:
        model, frozen = attach_buffer(job, model)
        return add_user_adapter(job, model, frozen)


@register
class Bnr(_WithBuffer):
    """Buffer-and-Reinforce: buffer frozen during training, then merge of the ReinforceLoRA (merge.method)"""

    name = "bnr"
    title = "Buffer-and-Reinforce"
    final_artifacts = (REINFORCE,)
    options_class = MergeOptions

    def finalize(self, job: UserJob, user_run: Path) -> Path:
        return merge_reinforce(job, user_run)


@register
class BnrBufferOnly(_WithBuffer):
    """ablation: UserLoRA trained with the buffer frozen; buffer dropped, no ReinforceLoRA (scale * dU)"""

    name = "bnr-buffer-only"
    title = "BnR, buffer only"
    aliases = ("buffer-only",)
    trains_like = "bnr"
    options_class = BufferOnlyOptions

    def finalize(self, job: UserJob, user_run: Path) -> Path:
        scale = job.options.scale
        return user_run if scale == 1.0 else rescale_user(job, user_run, scale)


@register
class BnrBufferOnlyFull(_WithBuffer):
    """ablation as the paper reports it: UserLoRA trained with the buffer frozen; buffer dropped, dU at full scale"""

    name = "bnr-buffer-only-full"
    title = "BnR, buffer only (full scale)"
    aliases = ("buffer-only-full",)
    trains_like = "bnr"

    def finalize(self, job: UserJob, user_run: Path) -> Path:
        return user_run


@register
class BnrReinforceOnly(Defense):
    """ablation: plain SFT UserLoRA merged with the ReinforceLoRA like bnr (no buffer)"""

    name = "bnr-reinforce-only"
    title = "BnR, reinforce only"
    aliases = ("reinforce-only",)
    trains_like = "sft"
    final_artifacts = (REINFORCE,)
    options_class = MergeOptions

    def finalize(self, job: UserJob, user_run: Path) -> Path:
        return merge_reinforce(job, user_run)
