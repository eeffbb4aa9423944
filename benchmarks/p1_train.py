"""P1: the user fine-tuning step. BnR with the buffer merged vs plain LoRA SFT vs the buffer `separate`; and bnr's
training loop (`bnr.train.train`) vs the Hugging Face `Trainer` on the same model, data and batch.

The three user-job models are built exactly as `bnr.orchestrate.userjob` builds them (`adapters.attach_frozen`,
`add_adapter`, `set_active`) from one random base of the given shape and one random BufferLoRA.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import shutil
from typing import Any

import torch
from common import Figure, Scale, figure, interleaved, median, medians, now
from shapes import lora_for, random_adapter_dir, random_examples, random_llama, scratch_dir

from bnr import adapters
from bnr.config import TrainConfig
from bnr.data.tokenize import Example, collate
from bnr.train import train

# (shape, batch size, sequence length, optimizer steps per repetition)
FULL = [("toy", 16, 128, 4), ("smollm2-135m", 2, 64, 1)]
SMOKE = [("tiny", 2, 16, 1)]
GPU = [("smollm2-135m", 8, 512, 8), ("llama3-8b", 4, 512, 4)]


def user_models(base: Any, buffer_dir: Any, shape: str) -> dict[str, Any]:
    """plain SFT, BnR (buffer merged into the weights) and BnR (buffer a separate frozen adapter)."""
    spec = lora_for(shape)
    out = {}
    for mode in ("plain", "merged", "separate"):
        model = copy.deepcopy(base)
        active = [adapters.USER]
        if mode != "plain":
            model = adapters.attach_frozen(model, buffer_dir, adapters.BUFFER, mode)  # type: ignore[arg-type]
            if mode == "separate":
                active = [adapters.BUFFER, adapters.USER]
        model = adapters.add_adapter(model, adapters.USER, spec)
        adapters.set_active(model, active=active, trainable=[adapters.USER])
        out[mode] = model
    return out


def _graph(model: Any) -> list[tuple[str, tuple[int, ...], bool]]:
    return [(n, tuple(p.shape), p.requires_grad) for n, p in model.named_parameters()]


def train_config(batch: int, steps: int) -> TrainConfig:
    return TrainConfig(lr=1e-4, max_steps=steps, batch_size=batch, progress=False, log_every=1)


class StepClock:
    """Timestamps after every optimizer step (bnr: `on_log` with log_every=1; HF: `on_step_end`)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def __call__(self, *_: Any, **__: Any) -> None:
        self.stamps.append(now())

    def intervals(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]


def bnr_job(model: Any, examples: list[Example], cfg: TrainConfig, clock: StepClock | None = None) -> None:
    train(model, examples, cfg, seed=0, pad_id=0, on_log=clock)


def hf_job(model: Any, examples: list[Example], cfg: TrainConfig, out: str, clock: StepClock, device: str) -> None:
    """The same job through `transformers.Trainer`: same optimizer, schedule, clipping, batch and collation."""
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    class _Clock(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            clock()

    args = TrainingArguments(
        output_dir=out,
        per_device_train_batch_size=cfg.batch_size,
        max_steps=cfg.max_steps or 1,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,
        max_grad_norm=cfg.max_grad_norm or 0.0,
        optim="adamw_torch",
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not device.startswith("cuda"),
        dataloader_num_workers=0,
        remove_unused_columns=False,
        seed=0,
    )
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]

    def collator(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return collate([Example(f["input_ids"], f["labels"], "") for f in features], 0)

    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collator, callbacks=[_Clock()])
    trainer.remove_callback(PrinterCallback)  # its end-of-training print is not part of the job
    trainer.train()


def _setup(shape: str, scale: Scale) -> tuple[Any, Any]:
    dtype = torch.bfloat16 if scale.cuda else torch.float32
    base = random_llama(shape, device=scale.device, dtype=dtype)
    root = scratch_dir("p1")
    return base, (root, random_adapter_dir(base, adapters.BUFFER, lora_for(shape), root))


def modes_figures(
    shape: str, models: dict[str, Any], examples: list[Example], cfg: TrainConfig, scale: Scale
) -> list[Figure]:
    steps = cfg.max_steps or 1
    intervals: dict[str, list[float]] = {m: [] for m in models}
    calls = dict.fromkeys(models, 0)

    def job(mode: str) -> None:
        clock = StepClock()
        bnr_job(models[mode], examples, cfg, clock)
        calls[mode] += 1
        if calls[mode] > 1:  # not the warm-up (memory) call
            intervals[mode].extend(clock.intervals())

    jobs = {m: functools.partial(job, m) for m in models}
    mem: dict[str, float] = {}
    reps = scale.reps * (2 if shape == "toy" else 1)  # toy steps are cheap: more rounds, less noise
    t = medians(interleaved(jobs, reps, device=scale.device, memory=mem))
    # with several steps per job: the median steady-state step (the first step of a job also builds the
    # optimizer state); one step per job: the job's time
    per_step = {m: median(intervals[m]) if intervals[m] and steps > 1 else v / steps for m, v in t.items()}
    detail = {
        "batch": cfg.batch_size,
        "seq_len": len(examples[0].input_ids),
        "steps_per_rep": steps,
        "reps": reps,
        "timed": "median step interval" if steps > 1 else "median job time",
        "step_samples": {m: len(v) for m, v in intervals.items()},
        # merged and plain run the same graph (only the base weights' values differ): any gap is noise
        "merged_same_graph_as_plain": _graph(models["merged"]) == _graph(models["plain"]),
    }
    return [
        figure(
            f"P1.{shape}.merged_vs_plain",
            "step time BnR (buffer merged) / plain LoRA SFT",
            per_step["merged"] / per_step["plain"],
            "<= 1.02",
            seconds=per_step,
            peak_mb=mem,
            detail=detail,
        ),
        figure(
            f"P1.{shape}.separate_vs_plain",
            "step time BnR (buffer separate) / plain LoRA SFT",
            per_step["separate"] / per_step["plain"],
            seconds=per_step,
            peak_mb=mem,
            detail=detail,
        ),
    ]


def trainer_figures(
    shape: str, model: Any, examples: list[Example], cfg: TrainConfig, scale: Scale, reps: int
) -> list[Figure]:
    out = scratch_dir("hf")
    clocks: dict[str, StepClock] = {"bnr": StepClock(), "hf": StepClock()}

    def run(name: str) -> None:
        clocks[name] = StepClock()
        if name == "bnr":
            bnr_job(model, examples, cfg, clocks[name])
        else:
            hf_job(model, examples, cfg, str(out), clocks[name], scale.device)
        intervals[name].extend(clocks[name].intervals())

    intervals: dict[str, list[float]] = {"bnr": [], "hf": []}
    mem: dict[str, float] = {}
    jobs = {"bnr": lambda: run("bnr"), "hf": lambda: run("hf")}
    t = medians(interleaved(jobs, reps, device=scale.device, memory=mem))
    shutil.rmtree(out, ignore_errors=True)
    detail = {"batch": cfg.batch_size, "seq_len": len(examples[0].input_ids), "steps_per_rep": cfg.max_steps}
    figs = [
        figure(
            f"P1.{shape}.loop_vs_trainer",
            "wall time of one K-step job: bnr train() / HF Trainer (incl. setup)",
            t["bnr"] / t["hf"],
            "<= 1.0",
            seconds=t,
            peak_mb=mem,
            detail=detail,
        ),
    ]
    if intervals["bnr"] and intervals["hf"]:
        per = {n: median(v) for n, v in intervals.items()}
        figs.append(
            figure(
                f"P1.{shape}.loop_vs_trainer_step",
                "median steady-state step: bnr train() / HF Trainer",
                per["bnr"] / per["hf"],
                "<= 1.0",
                seconds=per,
                detail={**detail, "intervals": len(intervals["bnr"])},
            )
        )
    return figs


def run(scale: Scale) -> list[Figure]:
    plan = SMOKE if scale.smoke else (GPU if scale.cuda else FULL)
    figs: list[Figure] = []
    for shape, batch, length, steps in plan:
        base, (root, buffer_dir) = _setup(shape, scale)
        examples = random_examples(base.config.vocab_size, batch * steps, length)
        cfg = train_config(batch, steps)
        models = user_models(base, buffer_dir, shape)
        figs += modes_figures(shape, models, examples, cfg, scale)
        # the Trainer comparison needs >= 2 steps for a steady-state interval
        cfg2 = dataclasses.replace(cfg, max_steps=max(2, steps))
        examples2 = random_examples(base.config.vocab_size, batch * max(2, steps), length)
        # a 135M model on 2 CPU cores: fewer rounds (compute dominates there, the loops' overhead shows on the toy)
        reps = scale.reps if shape in ("tiny", "toy") or scale.cuda else min(scale.reps, 2)
        figs += trainer_figures(shape, models["plain"], examples2, cfg2, scale, reps)
        shutil.rmtree(root, ignore_errors=True)
        del models, base
    return figs
