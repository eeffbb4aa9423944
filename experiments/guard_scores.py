"""Print the buffer guard's scores (bnr.guard) for real runs and for disguised copies of the buffer.

    python experiments/guard_scores.py PIPELINE_DIR [RUN ...]

PIPELINE_DIR holds `buffer/` and `reinforce/` runs (e.g. `bnr pipeline -c toy out=PIPELINE_DIR`); the buffer
must be registered (train-buffer does it; set BNR_BUFFER_REGISTRY as when it was trained). Each RUN (user
runs, merged deliverables, ...) is scored too, then disguised and laundered copies of the buffer (the laundering
variants of tests/reliability/laundering.py). docs/reliability.md shows the output on the toy world.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch

from bnr import guard
from bnr.lora_files import LoraModule, read_lora

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))
from laundering import VARIANTS  # the test suite's laundering variants, one definition

Modules = dict[str, LoraModule]


def show(name: str, modules: Modules, buffer: guard.Buffer) -> None:
    cand, hashes = guard._folded(modules), set(guard.content_hashes(modules))
    best = max(
        (guard.similarity(cand, buffer, hashes, transposed=t) for t in (False, True)),
        key=lambda s: (s.reason() is not None, s.piece),
    )
    verdict = "REFUSED" if best.reason() else "passes"
    print(
        f"| {name} | {best.piece:+.3f} | {best.coverage:.2f} | {best.holds:+.3f} | {best.cosine:+.3f} "
        f"| {best.copied:.2f} | {best.share:.2f} | {best.inside:.2f} | {'yes' if best.transposed else 'no'} "
        f"| {verdict} |"
    )


def tricks(B: Modules, R: Modules) -> dict[str, Modules]:
    g = torch.Generator().manual_seed(0)
    names = sorted(B)

    def each(f: Callable[[LoraModule], LoraModule]) -> Modules:
        return {k: f(v) for k, v in B.items()}

    def svd(v: LoraModule, k: int) -> LoraModule:
        U, S, Vh = torch.linalg.svd(v.scaling * v.B.double() @ v.A.double(), full_matrices=False)
        return LoraModule(Vh[:k].float(), (U[:, :k] * S[:k]).float(), 1.0)

    def noisy(v: LoraModule, f: float) -> LoraModule:
        n, a = torch.randn(v.B.shape[0], v.rank, generator=g), torch.randn(v.rank, v.A.shape[1], generator=g)
        n *= f * float((v.scaling * v.B @ v.A).norm()) / float((n @ a).norm())
        return LoraModule(torch.cat([v.A, a]), torch.cat([v.scaling * v.B, n], 1), 1.0)

    r = next(iter(B.values())).rank
    cat = {
        k: LoraModule(torch.cat([B[k].A, R[k].A]), torch.cat([B[k].scaling * B[k].B, R[k].scaling * R[k].B], 1), 1.0)
        for k in names
    }
    return {
        "buffer x3 (B rescaled)": each(lambda v: LoraModule(v.A, 3 * v.B, v.scaling)),
        "buffer x0.01 (A and B /10)": each(lambda v: LoraModule(0.1 * v.A, 0.1 * v.B, v.scaling)),
        "buffer, sign flipped (A /2)": each(lambda v: LoraModule(0.5 * v.A, -v.B, v.scaling)),
        "buffer transposed (A/2)": each(lambda v: LoraModule(0.5 * v.B.T.contiguous(), v.A.T.contiguous(), v.scaling)),
        "half of the modules (A/2)": {
            k: LoraModule(0.5 * B[k].A, B[k].B, B[k].scaling) for k in names[: len(names) // 2]
        },
        "half the rank components": each(lambda v: LoraModule(v.A[: r // 2], v.B[:, : r // 2], v.scaling)),
        "one rank component": each(lambda v: LoraModule(v.A[:1], v.B[:, :1], v.scaling)),
        "top singular component": each(lambda v: svd(v, 1)),
        "buffer + noise of 1x its norm": each(lambda v: noisy(v, 1.0)),
        "buffer + noise of 3x its norm": each(lambda v: noisy(v, 3.0)),
        "buffer concatenated with reinforce": cat,
    }


def main(argv: list[str]) -> None:
    root = Path(argv[0])
    B = read_lora(root / "buffer", allow_buffer=True).modules
    R = read_lora(root / "reinforce").modules
    key = guard.require_registered_buffer(root / "buffer", "buffer")
    buffer = next(b for b in guard.buffers() if b.key == key)
    print("| adapter | piece | coverage | holds | cosine | copied | share | inside | transposed | guard |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in [str(root / "reinforce"), *argv[1:]]:
        show(run, read_lora(run).modules, buffer)
    for name, modules in tricks(B, R).items():
        show(name, modules, buffer)
    for name, variant in VARIANTS.items():
        show(f"laundered: {name}", variant(B), buffer)


if __name__ == "__main__":
    main(sys.argv[1:])
