"""`repnoise`: representation noising - the provider re-aligns the base so that harmful inputs' hidden
representations look like Gaussian noise and harmful answers become unlikely at every layer.

Source: D. Rosati, J. Wehner, K. Williams, L. Bartoszcze, D. Atanasov, R. Gonzales, S. Majumdar, C. Maple,
H. Sajjad, F. Rudzicz, "Representation Noising: A Defence Mechanism Against Harmful Finetuning", NeurIPS 2024
(arXiv 2405.14577); reference repository domenicrosati/representation-noising (representation_noising/loss.py:
alpha 1, beta 0.001), also as `RepNoiseTrainer` in git-disl/Booster (whose script runs alpha 0.1).

Loss per micro-batch (`repnoise_loss`), with a harmless batch (the alignment set: harmful prompt -> refusal) and
a harmful batch (the provider's harmful set: harmful prompt -> harmful answer, a seeded side stream):
    L = CE(harmless) + beta * noise - alpha * log(ascent + 1)
- noise: the mean over blocks of MMD(harmful MLP outputs, standard Gaussian samples of the same shape), each
  sample one point (its response-token activations, other positions zeroed in both), multi-bandwidth Gaussian
  kernel (5 bandwidths, factor 2, base = mean pairwise squared distance), as released (`noise_term`);
- ascent: the mean harmful-answer cross-entropy over the logit lens of every layer (hidden state -> final norm
  -> output head) and the model's own output (`ascent_term`); the log keeps it from diverging.
The user job is plain SFT on the re-aligned base (`bnr.defenses.realign`).

Deviations: (1) the released code pairs each harmful sample with the same prompt's refusal and marks the response
by where the two token sequences differ; here the two batches are drawn independently and the response is the
label mask (labels != -100); (2) the released mean counts the final layer twice (the last hidden state is
already normed and its logits also enter as the model output) and divides by the number of hidden states; here
each of the L + 1 lens outputs (embeddings and blocks 1..L-1 through the lens, the model's logits last) counts once;
(3) the alignment pass runs on the already-aligned served base with the preset's alignment recipe (see realign).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bnr.config import DataConfig
from bnr.defenses.base import register
from bnr.defenses.realign import (
    RealignedBase,
    RealignOptions,
    block_modules,
    captured,
    decoder_norm,
    harmful_stream,
    register_realign_provider,
)
from bnr.defenses.streams import IndexedStream
from bnr.errors import BnrError
from bnr.locations import output

NAME = "repnoise"
ARTIFACT = "repnoise-aligned"


@dataclass
class RepNoiseOptions(RealignOptions):
    """`alpha` (weight of the log ascent term, 1), `beta` (weight of the noise term, 0.001), `harmful_data` /
    `n_harmful` (default `buffer.data` / `buffer.n`); provider fields as in `RealignOptions`."""

    alpha: float = 1.0
    beta: float = 0.001
    harmful_data: DataConfig | None = None
    n_harmful: int | None = None
    out: str = output("runs/repnoise-aligned")

    def __post_init__(self) -> None:
        self._check_counts(NAME, "n_harmful")
        for key in ("alpha", "beta"):
            if getattr(self, key) < 0:
                raise BnrError(f"defenses.{NAME}.{key} must be >= 0 (got {getattr(self, key)})")


def mmd(x: Tensor, y: Tensor, kernel_mul: float = 2.0, kernel_num: int = 5) -> Tensor:
    """Squared MMD between samples `x` and `y` (n x d each) with a sum of Gaussian kernels whose bandwidths are
    the mean pairwise squared distance times kernel_mul ** (i - kernel_num // 2), i < kernel_num."""
    z = torch.cat([x, y]).float()
    sq = (z * z).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * z @ z.T).clamp_min(0)
    n = z.shape[0]
    base = d2.detach().sum() / max(n * n - n, 1) / kernel_mul ** (kernel_num // 2)
    k = sum(torch.exp(-d2 / (base * kernel_mul**i + 1e-12)) for i in range(kernel_num))
    assert isinstance(k, Tensor)
    b = x.shape[0]
    return (k[:b, :b] + k[b:, b:] - k[:b, b:] - k[b:, :b]).mean()


def noise_term(activations: list[Tensor], mask: Tensor) -> Tensor:
    """Mean over layers of MMD(masked activations, masked standard Gaussian), one point per sample."""
    m = mask.unsqueeze(-1).to(activations[0].dtype)
    total = torch.zeros((), device=mask.device)
    for h in activations:
        hidden = h * m
        noise = torch.randn_like(hidden) * m
        total = total + mmd(hidden.reshape(h.shape[0], -1), noise.reshape(h.shape[0], -1))
    return total / len(activations)


def _shifted_ce(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))


def ascent_term(model: Any, hidden_states: tuple[Tensor, ...], logits: Tensor, labels: Tensor) -> Tensor:
    """Mean harmful cross-entropy over the logit lens of the embeddings and blocks 1..L-1 and the model's logits."""
    head, norm = model.get_output_embeddings(), decoder_norm(model)
    losses = [_shifted_ce(head(norm(h)), labels) for h in hidden_states[:-1]]
    losses.append(_shifted_ce(logits, labels))
    return torch.stack(losses).mean()


def repnoise_terms(model: Any, harmful: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(noise, ascent) of one harmful batch, in one forward pass."""
    with captured(block_modules(model, "mlp")) as acts:
        out = model(**harmful, output_hidden_states=True)
    mask = harmful["labels"].ne(-100)
    return noise_term(acts, mask), ascent_term(model, out.hidden_states, out.logits, harmful["labels"])


def repnoise_loss(
    harmful: IndexedStream, alpha: float, beta: float, grad_accum: int, pad_id: int
) -> Callable[[Any, dict[str, Tensor], Any], Tensor]:
    """The loop's `loss_fn`: CE(harmless) + beta * noise - alpha * log(ascent + 1)."""

    def loss_fn(model: Any, batch: dict[str, Tensor], ctx: Any) -> Tensor:
        side = harmful.collated(ctx.step * grad_accum + ctx.micro, pad_id, batch["input_ids"].device)
        noise, ascent = repnoise_terms(model, side)
        return model(**batch).loss + beta * noise - alpha * torch.log(ascent + 1)

    return loss_fn


def _hooks(cfg: Any, model: Any, tokenizer: Any, o: RepNoiseOptions) -> Any:
    from bnr.train import TrainHooks

    assert o.train is not None
    harmful = harmful_stream(cfg, tokenizer, o, "repnoise harmful")
    return TrainHooks(loss_fn=repnoise_loss(harmful, o.alpha, o.beta, o.train.grad_accum, tokenizer.pad_token_id))


register_realign_provider(
    NAME, ARTIFACT, "RepNoise: alignment + noise-matching and ascent on harmful data (`defenses.repnoise`)", _hooks
)


@register
class RepNoise(RealignedBase):
    """RepNoise (Rosati et al. 2024, arXiv 2405.14577): re-alignment noising harmful representations, then SFT"""

    name = NAME
    options_class = RepNoiseOptions
    train_artifacts = (ARTIFACT,)
