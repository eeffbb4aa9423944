"""Buffer-and-Reinforce and its two ablations, under the same names in every command.

- `bnr`: the UserLoRA is trained with the BufferLoRA frozen under it (`user.buffer_mode`: merged into the base
  weights, as the paper's code, or a separate frozen adapter); the buffer is then dropped and the ReinforceLoRA
  is merged into the UserLoRA with `merge.method` (default `qr`, the paper's soft projection; `naive` is the
  plain sum) at `merge.scale`, `merge.alpha`, `merge.tau`. The deliverable is the merged adapter.
- `bnr-buffer-only` (alias `buffer-only`): trained like `bnr`, the buffer dropped, no ReinforceLoRA: the
  deliverable is the UserLoRA as trained.
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
from pathlib import Path
from typing import Any

from bnr.defenses.base import BUFFER, REINFORCE, Defense, UserJob, add_user_adapter, attach_buffer, register


def merge_reinforce(job: UserJob, user_run: Path) -> Path:
    """The `merge` recipe on (this job's UserLoRA, the provider's ReinforceLoRA) into `job.final_out`."""
    from bnr.recipes import merge

    cfg = job.cfg
    m = dataclasses.replace(
        cfg.merge, user=str(user_run), reinforce=str(job.providers[REINFORCE]), out=str(job.final_out)
    )
    return merge.run(dataclasses.replace(cfg, merge=m))


class _WithBuffer(Defense):
    train_artifacts = (BUFFER,)

    def prepare_model(self, job: UserJob, model: Any) -> Any:
        model, frozen = attach_buffer(job, model)
        return add_user_adapter(job, model, frozen)


@register
class Bnr(_WithBuffer):
    """Buffer-and-Reinforce: buffer frozen during training, then merge of the ReinforceLoRA (merge.method)"""

    name = "bnr"
    final_artifacts = (REINFORCE,)
    final_reads = ("merge",)

    def finalize(self, job: UserJob, user_run: Path) -> Path:
        return merge_reinforce(job, user_run)


@register
class BnrBufferOnly(_WithBuffer):
    """ablation: UserLoRA trained with the buffer frozen; buffer dropped, no ReinforceLoRA"""

    name = "bnr-buffer-only"
    aliases = ("buffer-only",)
    trains_like = "bnr"


@register
class BnrReinforceOnly(Defense):
    """ablation: plain SFT UserLoRA merged with the ReinforceLoRA like bnr (no buffer)"""

    name = "bnr-reinforce-only"
    aliases = ("reinforce-only",)
    trains_like = "sft"
    final_artifacts = (REINFORCE,)
    final_reads = ("merge",)

    def finalize(self, job: UserJob, user_run: Path) -> Path:
        return merge_reinforce(job, user_run)
