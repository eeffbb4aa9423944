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

Remedies for the ReinforceLoRA's task-accuracy cost (issue 27 section 3; options `defenses.bnr.*`, all off by
default, each at no per-user cost; the buffer-trained defenses read `bnr`'s options, so `bnr-buffer-only` with
them is the remedy's UserLoRA alone):
- (a) `buffer_scale`: the buffer folded into the weights at that strength during user training (1.0: as trained);
  `buffer_steps`: the fraction of the user's optimizer steps (the first ones) trained with the buffer present.
- (b) `plain_steps`: the last k optimizer steps of the user job run without the buffer (on the plain base, on the
  user's own data, within the same schedule: no extra steps).
  With (a) or (b) on, bnr folds the buffer into the weights itself (float64, rounded once, as `bnr merge`'s full
  model) and takes it out again at the switch step (`user.buffer_mode: merged` only); each step's strength is in
  the training log (`buffer_scale`) and the switch in the run's `defense_notes.buffer_schedule`.
- (c) `reinforce_pool`: a list of provider datasets; the ReinforceLoRA stage first trains one buffer-trained
  UserLoRA per dataset (benign rows only, `user.n` of them, `user.lora` / `user.train`, seed + i, the provider's
  own simulated customers) and then trains the ReinforceLoRA on the plain base with those UserLoRAs folded in at
  the merge's user strength, one pool member per optimizer step in turn, instead of on the buffer-merged base.
  The stage records the pool runs (paths, content hashes, data) in its manifest; the pool enters its key.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from bnr import adapters
from bnr.config import Config, DataConfig, MergeConfig
from bnr.defenses.base import (
    BUFFER,
    FINALIZE_ONLY,
    REINFORCE,
    Defense,
    UserJob,
    add_user_adapter,
    attach_buffer,
    from_section,
    options_for,
    register,
)
from bnr.errors import BnrError
from bnr.lora_files import LoraModule
from bnr.train import StepCallback

NAME = "bnr"


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


@dataclass
class BnrOptions(MergeOptions):
    """`merge` (MergeOptions), and remedies for the ReinforceLoRA's cost (module doc; defaults: the method as
    published). (a) `buffer_scale`
    (> 0), `buffer_steps` (fraction in [0, 1] of the user's steps, the first ones, with the buffer); (b)
    `plain_steps` (>= 0: the last k steps without it); (c) `reinforce_pool` (datasets of the provider's
    buffer-trained UserLoRAs the ReinforceLoRA is trained on, on the plain base)."""

    buffer_scale: float = 1.0
    buffer_steps: float = 1.0
    plain_steps: int = 0
    # a provider-stage option (the ReinforceLoRA's key holds it): it does not shape the UserLoRA's training
    reinforce_pool: list[DataConfig] = field(default_factory=list, metadata={FINALIZE_ONLY: True})

    def __post_init__(self) -> None:
        if not self.buffer_scale > 0:
            raise BnrError(f"defenses.bnr.buffer_scale must be > 0 (got {self.buffer_scale}); 1.0 is the method")
        if not 0 <= self.buffer_steps <= 1:
            raise BnrError(f"defenses.bnr.buffer_steps must be in [0, 1] (got {self.buffer_steps}): a fraction")
        if self.plain_steps < 0:
            raise BnrError(f"defenses.bnr.plain_steps must be >= 0 (got {self.plain_steps})")

    @property
    def schedules_buffer(self) -> bool:
        """Whether (a) or (b) is on: the buffer is folded and taken out by bnr rather than merged once by peft."""
        return self.buffer_scale != 1.0 or self.buffer_steps != 1.0 or self.plain_steps > 0


def bnr_options(cfg: Config) -> BnrOptions:
    options: BnrOptions = options_for(cfg, NAME)
    return options


class FoldSchedule(StepCallback):
    """LoRA deltas folded into the model's own weights on a per-step plan: while optimizer step t is built, the
    weights hold `plan(t, total)` = (index into `deltas`, scale), or none of them (None). The weights a delta
    touches are kept as they were before training (in CPU memory), so every state is W0 + scale * B A computed in
    float64 and rounded once, and none is W0 again: the same bits whatever came before it, so a resumed run
    folds exactly what an uninterrupted one does. Every step logs what it was trained with (`metric`: the scale,
    or the index with `log_index`). State for resume: the next step."""

    def __init__(
        self,
        deltas: list[dict[str, LoraModule]],
        plan: Callable[[int, int], tuple[int, float] | None],
        metric: str,
        log_index: bool = False,
        on_start: Callable[[int], None] | None = None,
    ) -> None:
        self.deltas, self.plan, self.metric, self.log_index = deltas, plan, metric, log_index
        self.on_start = on_start
        self.current: tuple[int, float] | None = None
        self.next_step = 0
        self.total = 0
        self.model: Any = None
        self.originals: dict[str, Any] = {}

    def _set(self, want: tuple[int, float] | None) -> None:
        import torch

        from bnr.merge import add_delta, module_weight

        if want == self.current:
            return
        with torch.no_grad():
            touched = {
                n: m for held in (self.current, want) if held is not None for n, m in self.deltas[held[0]].items()
            }
            for name, m in touched.items():
                weight = module_weight(self.model, name, m)
                if name not in self.originals:
                    self.originals[name] = weight.detach().to("cpu", copy=True)
                weight.copy_(self.originals[name])
            if want is not None:
                for name, m in self.deltas[want[0]].items():
                    add_delta(module_weight(self.model, name, m), LoraModule(m.A, m.B, want[1] * m.scaling))
        self.current = want

    def on_train_start(self, model: Any, total: int) -> None:
        from bnr import distributed

        if distributed.is_sharded(model):
            raise BnrError("defenses.bnr remedies fold adapters into the weights: not with sharded (FSDP) training")
        self.model = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.total = total
        if self.on_start is not None:
            self.on_start(total)
        self._set(self.plan(self.next_step, total))

    def after_optimizer_step(self, model: Any, ctx: Any, loss: float) -> dict[str, float]:
        used = self.current
        value = (used[0] if self.log_index else used[1]) if used is not None else (-1 if self.log_index else 0.0)
        self.next_step = ctx.step + 1
        if self.next_step < self.total:
            self._set(self.plan(self.next_step, self.total))
        return {self.metric: float(value)}

    def state_dict(self) -> dict[str, Any]:
        return {"next_step": self.next_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next_step = int(state.get("next_step", 0))


def buffer_switch_step(options: BnrOptions, total: int) -> int:
    """The first optimizer step trained without the buffer (total: it stays to the end)."""
    return max(0, min(math.ceil(options.buffer_steps * total), total - options.plain_steps))


class _WithBuffer(Defense):
    train_artifacts = (BUFFER,)

    def check(self, job: UserJob) -> list[str]:
        options = bnr_options(job.cfg)
        if options.schedules_buffer and job.cfg.user.buffer_mode != "merged":
            raise BnrError(
                "defenses.bnr.buffer_scale / buffer_steps / plain_steps fold the buffer into the weights: "
                "set user.buffer_mode=merged"
            )
        return []

    def prepare_model(self, job: UserJob, model: Any) -> Any:
        if bnr_options(job.cfg).schedules_buffer:  # folded by the training hook's schedule
            self.check(job)
            return add_user_adapter(job, model)
        model, frozen = attach_buffer(job, model)
        return add_user_adapter(job, model, frozen)

    def training_hooks(self, job: UserJob, model: Any, tokenizer: Any, examples: list[Any]) -> Any:
        from bnr.lora_files import read_lora
        from bnr.train import TrainHooks

        options = bnr_options(job.cfg)
        if not options.schedules_buffer:
            return TrainHooks()
        scale = options.buffer_scale

        def plan(step: int, total: int) -> tuple[int, float] | None:
            return (0, scale) if step < buffer_switch_step(options, total) else None

        def note(total: int) -> None:
            switch = buffer_switch_step(options, total)
            job.notes["buffer_schedule"] = {"scale": scale, "steps_with_buffer": switch, "total_steps": total}

        buffer = read_lora(job.providers[BUFFER], allow_buffer=True).modules
        return TrainHooks(callbacks=[FoldSchedule([buffer], plan, "buffer_scale", on_start=note)])


# ---------------------------------------------------------------- (c) the ReinforceLoRA's pool


def pool_key(cfg: Config) -> dict[str, Any] | None:
    """What the pool adds to the ReinforceLoRA stage's key (None without a pool: the key is the method's)."""
    from bnr.merge import strengths
    from bnr.runs.keys import section

    pool = bnr_options(cfg).reinforce_pool
    if not pool:
        return None
    user = section(cfg, "user")
    return {
        "reinforce_pool": [dataclasses.asdict(d) for d in pool],
        "pool_user": {k: user[k] for k in ("n", "lora", "train", "buffer_mode")},
        "pool_scale": strengths(cfg.merge.scale, cfg.merge.user_scale)[0],
    }


def train_pool_member(cfg: Config, data: DataConfig, i: int) -> Path:
    """Pool member i of the ReinforceLoRA stage: a buffer-trained UserLoRA on `user.n` benign rows of `data`
    (seed + i), written as a complete run beside the ReinforceLoRA's (`<reinforce.out>-pool<i>`)."""
    from bnr.data.mix import data_manifest
    from bnr.models import load_model_and_tokenizer, serving_name
    from bnr.runs.fit import check_trained, fit, load_sampled
    from bnr.runs.opening import check_parent, manifest_for, open_run

    seed = cfg.seed + i
    cfg = dataclasses.replace(cfg, seed=seed)
    check_parent(cfg.reinforce.buffer, "buffer", "reinforce.buffer", cfg.model, content=True)
    records = load_sampled(data, cfg.user.n, seed, f"reinforce pool {i}")
    writer = open_run(cfg, f"{cfg.reinforce.out}-pool{i}", "user")
    model, tokenizer = load_model_and_tokenizer(cfg.model, for_training=True)
    model = adapters.attach_frozen(model, cfg.reinforce.buffer, adapters.BUFFER, "merged")
    model = adapters.add_adapter(model, adapters.USER, cfg.user.lora, base_name=serving_name(cfg.model))
    adapters.set_active(model, active=[adapters.USER], trainable=[adapters.USER])
    training = fit(model, tokenizer, records, cfg, cfg.user.train, writer, f"reinforce pool {i}")
    adapters.save_adapter(model, adapters.USER, writer.tmp)
    check_trained(writer.tmp, "bnr train-reinforce")
    manifest = manifest_for(
        cfg,
        parents=[("buffer", cfg.reinforce.buffer)],
        data=data_manifest(records),
        training=training,
        adapter=adapters.USER,
        trained_with_buffer=True,
        contains_buffer=False,
        reinforce_pool_member=i,
    )
    return writer.finalize(manifest)


def train_pool(cfg: Config) -> list[Path]:
    """The pool's UserLoRA runs, trained in order (none without `defenses.bnr.reinforce_pool`)."""
    return [train_pool_member(cfg, data, i) for i, data in enumerate(bnr_options(cfg).reinforce_pool)]


def pool_hooks(cfg: Config, runs: list[Path]) -> Any:
    """The ReinforceLoRA's training hooks with a pool: member t mod N folded in at the merge's user strength
    while step t is built (the training log's `pool_member`)."""
    from bnr.lora_files import read_lora
    from bnr.merge import strengths
    from bnr.train import TrainHooks

    scale = strengths(cfg.merge.scale, cfg.merge.user_scale)[0]
    deltas = [read_lora(run).modules for run in runs]
    schedule = FoldSchedule(deltas, lambda step, total: (step % len(deltas), scale), "pool_member", log_index=True)
    return TrainHooks(callbacks=[schedule])


def pool_manifest(cfg: Config, runs: list[Path]) -> list[dict[str, Any]]:
    """Which UserLoRAs the ReinforceLoRA was trained on: run, content hash, data."""
    from bnr.runs.keys import content_hash

    pool = bnr_options(cfg).reinforce_pool
    return [
        {"run": str(run), "content_hash": content_hash(run), "data": dataclasses.asdict(data)}
        for run, data in zip(runs, pool, strict=True)
    ]


@register
class Bnr(_WithBuffer):
    """Buffer-and-Reinforce: buffer frozen during training, then merge of the ReinforceLoRA (merge.method)"""

    name = NAME
    title = "Buffer-and-Reinforce"
    options_class: ClassVar[type] = BnrOptions  # bnr-calibrated has its own (it trains with bnr's remedies)
    final_artifacts = (REINFORCE,)

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
