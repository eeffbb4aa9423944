"""`t-vaccine`: targeted (layer-wise) Vaccine - perturbation-aware re-alignment on a few safety-critical blocks at
a time, chosen at random with probabilities proportional to their harmful-data gradient norms.

Source: G. Liu, W. Lin, T. Huang, R. Mo, Q. Mu, L. Shen, "Targeted Vaccine: Safety Alignment for Large Language
Models against Harmful Fine-Tuning via Layer-wise Perturbation" (arXiv 2410.09760); reference repository
Lslland/T-Vaccine (`BaseTrainer` in trainer.py, script/alignment/T-Vaccine.sh: intensity 3, S = 8 active layers,
re-drawn every J = 20 steps, probabilities refreshed every K = 200 steps from one harmful sample of 200).

Per step (`LayerSelection`, a step callback whose state is checkpointed, and `t_vaccine_loss`):
- every `probability_every` steps: p_l = ||dh/d out_l|| / sum_k ||dh/d out_k||, the gradient norm of the harmful
  loss h (one micro-batch of `probe_batch_size` samples of the provider's harmful set) at the output of block l's
  attention module;
- every `interval` steps: draw `n_layers` distinct blocks with probabilities p (a generator seeded by the run's
  seed and the step, so resume draws the same);
- Vaccine's two passes (`bnr.defenses.vaccine`) with the perturbation (norm rho over the selected blocks jointly)
  on the selected blocks' attention outputs only; only their LoRA weights get a gradient and an update (the other
  blocks' LoRA gradients are zeroed by tensor hooks, so the clipping norm ignores them, and dropped before the
  optimizer step, so AdamW leaves them untouched).
The user job is plain SFT on the re-aligned base (`bnr.defenses.realign`).

Deviations: (1) the reference freezes only the attention modules' LoRA outside the selected layers (its LoRA targets
q and v); here every LoRA weight of an unselected block is frozen for the step (bnr's LoRA also adapts the MLP);
(2) for models with more than 26 layers the reference also activates the block before each selected one; not
done here; (3) `n_layers` null means a quarter of the blocks, rounded up (the paper's 8 of Llama-2-7B's 32);
(4) the alignment pass runs on the already-aligned served base with the preset's alignment recipe (see realign).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bnr.config import DataConfig
from bnr.defenses.base import register
from bnr.defenses.realign import RealignedBase, RealignOptions, block_modules, register_realign_provider
from bnr.defenses.streams import IndexedStream, encoded
from bnr.defenses.vaccine import output_gradients, perturbed_loss
from bnr.errors import BnrError
from bnr.locations import output
from bnr.merge import layer_index
from bnr.train import StepCallback

NAME = "t-vaccine"
ARTIFACT = "t-vaccine-aligned"


@dataclass
class TVaccineOptions(RealignOptions):
    """`rho` (3), `n_layers` (S; null: a quarter of the blocks), `interval` (J, 20 steps), `probability_every`
    (K, 200 steps), `harmful_data` / `n_harmful` (the probe set, default `buffer.data`, 200 samples),
    `probe_batch_size` (1); provider fields as in `RealignOptions`."""

    rho: float = 3.0
    n_layers: int | None = None
    interval: int = 20
    probability_every: int = 200
    harmful_data: DataConfig | None = None
    n_harmful: int | None = 200
    probe_batch_size: int = 1
    out: str = output("runs/t-vaccine-aligned")

    def __post_init__(self) -> None:
        self._check_counts(NAME, "n_harmful", "n_layers", "interval", "probability_every", "probe_batch_size")
        if self.rho < 0:
            raise BnrError(f"defenses.{NAME}.rho must be >= 0 (got {self.rho})")


def layer_probabilities(model: Any, probe: dict[str, Tensor]) -> list[float]:
    """p_l proportional to the norm of the harmful loss's gradient at block l's attention output."""
    _, grads = output_gradients(model, probe, block_modules(model, "self_attn"))
    norms = torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]).clamp_min(1e-12)
    return (norms / norms.sum()).tolist()


def draw_layers(probabilities: list[float], k: int, seed: int, step: int) -> list[int]:
    """`k` distinct block indices drawn with `probabilities` (sorted), reproducible from (seed, step)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return sorted(torch.multinomial(torch.tensor(probabilities), k, replacement=False, generator=g).tolist())


class LayerSelection(StepCallback):
    """Which blocks are active (re-drawn every `interval` steps from probabilities refreshed every
    `probability_every` steps); freezes the LoRA weights of the others for the step."""

    def __init__(self, o: TVaccineOptions, probes: IndexedStream, seed: int, pad_id: int) -> None:
        self.o, self.probes, self.seed, self.pad_id = o, probes, seed, pad_id
        self.probabilities: list[float] | None = None
        self.active: list[int] = []
        self.updated_at = -1
        self._params: list[tuple[int | None, torch.nn.Parameter]] = []

    def on_train_start(self, model: torch.nn.Module, total: int) -> None:
        n_blocks = len(block_modules(model, "self_attn"))
        self.k = self.o.n_layers or math.ceil(n_blocks / 4)
        if self.k > n_blocks:
            raise BnrError(f"defenses.{NAME}.n_layers={self.k} exceeds the model's {n_blocks} blocks; lower it")
        self._params = [(layer_index(n), p) for n, p in model.named_parameters() if p.requires_grad]
        for i, p in self._params:
            if i is not None:
                p.register_hook(lambda g, i=i: g if i in self.active else torch.zeros_like(g))

    def update(self, model: Any, step: int, device: torch.device) -> None:
        """Refresh the probabilities and redraw the blocks where the schedule says (once per step)."""
        if self.updated_at == step:
            return
        self.updated_at = step
        if step % self.o.probability_every == 0 or self.probabilities is None:
            probe = self.probes.collated(step // self.o.probability_every, self.pad_id, device)
            self.probabilities = layer_probabilities(model, probe)
        if step % self.o.interval == 0 or not self.active:
            self.active = draw_layers(self.probabilities, self.k, self.seed, step)

    def before_optimizer_step(self, model: torch.nn.Module, ctx: Any) -> None:
        for i, p in self._params:
            if i is not None and i not in self.active:
                p.grad = None

    def after_optimizer_step(self, model: torch.nn.Module, ctx: Any, loss: float) -> dict[str, float] | None:
        return {"active_layers": float(len(self.active))}

    def state_dict(self) -> dict[str, Any]:
        return {"probabilities": self.probabilities, "active": list(self.active)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.probabilities, self.active = state["probabilities"], list(state["active"])


def t_vaccine_loss(selection: LayerSelection, rho: float) -> Callable[[Any, dict[str, Tensor], Any], Tensor]:
    """The loop's `loss_fn`: Vaccine's perturbed loss on the selected blocks' attention outputs."""

    def loss_fn(model: Any, batch: dict[str, Tensor], ctx: Any) -> Tensor:
        selection.update(model, ctx.step, batch["input_ids"].device)
        attn = block_modules(model, "self_attn")
        return perturbed_loss(model, batch, [attn[i] for i in selection.active], rho)

    return loss_fn


def _hooks(cfg: Any, model: Any, tokenizer: Any, o: TVaccineOptions) -> Any:
    from bnr.train import TrainHooks

    assert o.harmful_data is not None
    probes = IndexedStream(
        encoded(cfg, tokenizer, o.harmful_data, o.n_harmful, cfg.seed + 1, "t-vaccine probe"),
        o.probe_batch_size,
        cfg.seed + 1,
        "t-vaccine probe",
    )
    selection = LayerSelection(o, probes, cfg.seed, tokenizer.pad_token_id)
    return TrainHooks(loss_fn=t_vaccine_loss(selection, o.rho), callbacks=[selection])


register_realign_provider(
    NAME, ARTIFACT, "T-Vaccine: Vaccine on gradient-norm-sampled blocks (`defenses.t-vaccine`)", _hooks
)


@register
class TVaccine(RealignedBase):
    """T-Vaccine (Liu et al. 2024, arXiv 2410.09760): layer-wise Vaccine re-alignment, then plain SFT on it"""

    name = NAME
    options_class = TVaccineOptions
    train_artifacts = (ARTIFACT,)
