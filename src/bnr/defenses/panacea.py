"""`panacea`: an adaptive perturbation, optimised during fine-tuning to raise the harmful loss, added to the
fine-tuned adapter afterwards.

Source: Y. Wang, T. Huang, L. Shen, H. Yao, H. Luo, R. Liu, N. Tan, J. Huang, D. Tao, "Panacea: Mitigating
Harmful Fine-tuning for Large Language Models via Post-fine-tuning Perturbation", 2025 (arXiv 2501.18100);
reference code the `Panacea` trainer of the Booster lineage as released in SeokilHam/Buffer-and-Reinforce
(trainer.py, train.py, script/finetune/panacea.sh: eps_rho 1, lamb 1e-4, 1000 LAT harmful samples, tag eps).

Each optimizer step (a `StepCallback.before_optimizer_step`, after the user's gradient g is accumulated):
the harmful gradient at w on one harmful micro-batch gives the perturbation eps = rho * grad h(w) / ||grad h(w)||
(over all UserLoRA weights: ascent on the harmful loss); the harmful loss at w + eps (clamped at 5, as released)
gives grad h(w + eps); the weights go back to w and the step uses g - lambda (grad h(w + eps) - grad h(w)), so
fine-tuning keeps the harmful loss high under the perturbation. Both harmful passes run under a forked RNG, so
they share one dropout mask and leave the user's stream of random numbers untouched.

Representation: the last step's eps (one tensor per UserLoRA factor, keyed like the adapter file:
`base_model.model.<module>.lora_{A,B}.weight`) is saved in the user run as `panacea_perturbation.safetensors`
(and with every checkpoint, for exact resume); `finalize` writes the deliverable at `user.final_out` as a normal
PEFT adapter folder: the UserLoRA's own `adapter_config.json` and its factors plus eps (A + eps_A, B + eps_B),
exactly what the released code saves after `param.data += epsilon`.

Deviations: (1) one harmful micro-batch per optimizer step (released: per micro-batch; the same at its grad_accum
of 1). (2) The loop clips the user's gradient before the correction is added (released: the combined gradient is
clipped); with lambda = 1e-4 the correction is small. (3) The shared RNG of the two harmful passes (released:
independent dropout masks). (4) The harmful set is the provider's (`buffer.data`) unless `data` is set, all of
it unless `n` is set (released: 1000 LAT samples; the pool's size does not change the cost, one micro-batch is
drawn per step).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bnr import adapters
from bnr.config import DataConfig, TrainConfig
from bnr.defenses.base import Defense, UserJob, from_section, register
from bnr.defenses.streams import IndexedStream, stream_for
from bnr.errors import BnrError
from bnr.train import StepCallback, StepContext, TrainHooks, bf16_autocast

PERTURBATION = "panacea_perturbation.safetensors"
WEIGHTS, CONFIG = "adapter_model.safetensors", "adapter_config.json"
_FACTOR = re.compile(rf"\.lora_([AB])\.{adapters.USER}\.weight$")


@dataclass
class PanaceaOptions:
    """`rho`: the perturbation's norm (released eps_rho 1); `lamb`: weight of the harmful-loss change (1e-4);
    `loss_cap`: clamp of the perturbed harmful loss (5); `data` / `n`: harmful set (default `buffer.data`, all)."""

    rho: float = 1.0
    lamb: float = 1e-4
    loss_cap: float = 5.0
    data: DataConfig | None = from_section("buffer.data")
    n: int | None = None

    def __post_init__(self) -> None:
        for key in ("rho", "lamb"):
            if getattr(self, key) < 0:
                raise BnrError(f"defenses.panacea.{key} must be >= 0 (got {getattr(self, key)})")
        if self.loss_cap <= 0:
            raise BnrError(f"defenses.panacea.loss_cap must be > 0 (got {self.loss_cap})")
        if self.n is not None and self.n < 1:
            raise BnrError(f"defenses.panacea.n must be >= 1 (got {self.n})")


def file_key(param_name: str) -> str:
    """The adapter file's key of a UserLoRA parameter (`...lora_A.user.weight` -> `...lora_A.weight`)."""
    return _FACTOR.sub(r".lora_\1.weight", param_name)


class Perturbation(StepCallback):
    """Computes eps and the corrected gradient each step; keeps the last eps (saved for finalize)."""

    def __init__(
        self, opts: PanaceaOptions, harmful: IndexedStream, pad_id: int, train: TrainConfig, out: Path | None
    ) -> None:
        self.opts, self.harmful, self.pad_id, self.train, self.out = opts, harmful, pad_id, train, out
        self.last_loss = float("nan")
        self.eps: dict[str, torch.Tensor] = {}

    def _harmful_grads(self, model: Any, params: dict[str, torch.nn.Parameter], batch: Any, cap: float | None) -> Any:
        device = batch["input_ids"].device
        for p in params.values():
            p.grad = None
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_autocast(self.train, device)):
                loss = model(**batch).loss
            (loss if cap is None else torch.clamp(loss, max=cap)).backward()
        return {n: p.grad.detach().clone() for n, p in params.items()}, float(loss.detach())  # type: ignore[union-attr]

    def before_optimizer_step(self, model: Any, ctx: StepContext) -> None:
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        g = {n: p.grad.detach().clone() for n, p in params.items() if p.grad is not None}
        device = next(iter(params.values())).device
        batch = self.harmful.collated(ctx.step, self.pad_id, device)
        gh, _ = self._harmful_grads(model, params, batch, None)
        norm = torch.sqrt(sum((t.float() ** 2).sum() for t in gh.values()))
        self.eps = {n: (self.opts.rho * t / (norm + 1e-7)).to(t.dtype) for n, t in gh.items()}
        saved = {n: p.detach().clone() for n, p in params.items()}
        with torch.no_grad():
            for n, p in params.items():
                p.add_(self.eps[n])
        ghp, self.last_loss = self._harmful_grads(model, params, batch, self.opts.loss_cap)
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved[n])
                p.grad = g.get(n, torch.zeros_like(p)) - self.opts.lamb * (ghp[n] - gh[n])

    def after_optimizer_step(self, model: Any, ctx: StepContext, loss: float) -> dict[str, float]:
        if ctx.step == ctx.total - 1:
            self.save()
        return {"panacea_harmful_loss": self.last_loss}

    def on_train_start(self, model: Any, total: int) -> None:
        self.save()  # a run resumed after its last step has eps from the checkpoint only

    def save(self) -> None:
        if self.eps and self.out is not None:
            from safetensors.torch import save_file

            tensors = {file_key(n): t.detach().cpu().contiguous() for n, t in self.eps.items()}
            save_file(tensors, str(self.out / PERTURBATION), metadata={"format": "pt"})

    def state_dict(self) -> dict[str, Any]:
        return {"eps": self.eps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.eps = state["eps"]


def perturbed(user_run: Path) -> dict[str, torch.Tensor]:
    """The UserLoRA's factors plus the saved perturbation, keyed like the adapter file."""
    from safetensors.torch import load_file

    if not (user_run / PERTURBATION).is_file():
        raise BnrError(f"{str(user_run)!r} holds no {PERTURBATION}; it was not trained with defense panacea")
    weights, eps = load_file(str(user_run / WEIGHTS)), load_file(str(user_run / PERTURBATION))
    if set(weights) != set(eps):
        raise BnrError(f"{PERTURBATION} in {str(user_run)!r} does not match its adapter's weights; retrain it")
    return {k: (w + eps[k].to(w.dtype)).contiguous() for k, w in weights.items()}


@register
class Panacea(Defense):
    """Panacea (Wang et al. 2025): a perturbation raising the harmful loss, optimised in training, added after"""

    name = "panacea"
    options_class = PanaceaOptions

    def training_hooks(self, job: UserJob, model: Any, tokenizer: Any, examples: list[Any]) -> TrainHooks:
        cfg, opts = job.cfg, job.options
        train = cfg.user.train
        harmful = stream_for(cfg, tokenizer, opts.data, opts.n, train, cfg.seed + 5, "panacea")
        job.notes["harmful_records"] = len(harmful.examples)
        return TrainHooks(callbacks=[Perturbation(opts, harmful, tokenizer.pad_token_id, train, job.work_dir)])

    def finalize(self, job: UserJob, user_run: Path) -> Path:
        from safetensors.torch import save_file

        from bnr.runs.opening import manifest_for, open_run

        tensors = perturbed(user_run)
        writer = open_run(job.cfg, str(job.final_out), "panacea")
        shutil.copy(user_run / CONFIG, writer.tmp / CONFIG)
        save_file(tensors, str(writer.tmp / WEIGHTS), metadata={"format": "pt"})
        manifest = manifest_for(
            job.cfg,
            parents=[("user", str(user_run))],
            data={},
            perturbation={"rho": job.options.rho},
            adapter=adapters.USER,
            contains_buffer=False,
        )
        return writer.finalize(manifest)
