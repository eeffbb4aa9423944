"""Laundered copies of a BufferLoRA (issue 21 section 1): deltas rebuilt inside the buffer's own column and row
spaces, which jailbreak like the buffer while their cosine with it is near zero or negative.

Each variant maps the buffer's modules (`LoraModule`, scaling folded in) to a candidate's; the candidates have
rank r (the buffer's) unless said otherwise. Shared by tests/reliability/test_guard_laundering.py and
scripts/guard_scores.py (which puts this folder on sys.path).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from bnr.lora_files import LoraModule

Modules = dict[str, LoraModule]
Variant = Callable[[Modules], Modules]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _delta_svd(m: LoraModule) -> tuple[Tensor, Tensor, Tensor]:
    """(U, S, Vh) of the module's delta scaling * B A from the factors' QRs (an r x r SVD)."""
    Qb, Rb = torch.linalg.qr(m.scaling * m.B.double())
    Qa, Ra = torch.linalg.qr(m.A.double().T)
    U, S, Vh = torch.linalg.svd(Rb @ Ra.T)
    return Qb @ U, S, Vh @ Qa.T


def svd_rms(buffer: Modules) -> Modules:
    """The buffer's SVD with every singular value set to their RMS (same spaces, same norm, flat spectrum)."""
    out = {}
    for name, m in buffer.items():
        U, S, Vh = _delta_svd(m)
        rms = S.pow(2).mean().sqrt()
        out[name] = LoraModule(Vh.float(), (U * rms).float(), 1.0)
    return out


def mixed_half(buffer: Modules, seed: int = 0) -> Modules:
    """Half of the rank components after mixing the factors with a random invertible r x r matrix G:
    (B G)[:, :r/2] (G^-1 A)[:r/2] (rank r/2)."""
    g, out = _gen(seed), {}
    for name, m in buffer.items():
        r = m.rank
        G = torch.randn(r, r, generator=g, dtype=torch.float64) + 2 * torch.eye(r, dtype=torch.float64)
        B, A = (m.scaling * m.B.double()) @ G, torch.linalg.solve(G, m.A.double())
        out[name] = LoraModule(A[: r // 2].float(), B[:, : r // 2].float(), 1.0)
    return out


def b_cm_a(buffer: Modules, seed: int = 1) -> Modules:
    """B (c M) A for a random r x r M, c giving each module the buffer's norm."""
    g, out = _gen(seed), {}
    for name, m in buffer.items():
        M = torch.randn(m.rank, m.rank, generator=g, dtype=torch.float64)
        B, A = (m.scaling * m.B.double()) @ M, m.A.double()
        c = float((m.scaling * m.B.double() @ A).norm() / (B @ A).norm())
        out[name] = LoraModule((0.5 * A).float(), (2 * c * B).float(), 1.0)  # A halved: no factor is the buffer's
    return out


def diluted(buffer: Modules, factor: float = 3.0, seed: int = 2) -> Modules:
    """`svd_rms` plus random rank-r components outside the buffer's spaces with `factor` x its norm (rank 2r):
    the energy share drops to 1 / (1 + factor^2), the laundered part stays whole."""
    g, out = _gen(seed), {}
    for name, m in svd_rms(buffer).items():
        U, _, Vh = _delta_svd(buffer[name])
        nb = torch.randn(m.B.shape, generator=g, dtype=torch.float64)
        na = torch.randn(m.A.shape, generator=g, dtype=torch.float64)
        nb -= U @ (U.T @ nb)  # outside the buffer's column space
        na -= (na @ Vh.T) @ Vh  # and row space
        nb *= factor * float((m.B.double() @ m.A.double()).norm() / (nb @ na).norm())
        out[name] = LoraModule(torch.cat([m.A, na.float()]), torch.cat([m.B, nb.float()], 1), 1.0)
    return out


def split(buffer: Modules, parts: int = 2) -> list[Modules]:
    """`svd_rms` cut into `parts` deliverables that sum to it (each 1/parts of it): a customer adds them up."""
    whole = svd_rms(buffer)
    return [{n: LoraModule(m.A, m.B / parts, 1.0) for n, m in whole.items()} for _ in range(parts)]


VARIANTS: dict[str, Variant] = {
    "svd, singular values set to their RMS": svd_rms,
    "half the rank components after a random r x r mixing": mixed_half,
    "B (cM) A, random M": b_cm_a,
    "svd-rms diluted with 3x its norm outside the buffer's spaces": diluted,
    "svd-rms, one of two halves": lambda b: split(b, 2)[0],
}
