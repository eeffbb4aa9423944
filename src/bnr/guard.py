"""The buffer guard: the BufferLoRA never leaves the provider, whatever the files around it say.

The provider keeps a registry of its buffers (`BNR_BUFFER_REGISTRY`, default `$BNR_CACHE/buffers` or
`~/.cache/bnr/buffers`): per buffer, the content hash of every factor and the factors themselves (scaling
folded into B). `bnr train-buffer` registers what it trains; `bnr buffers register PATH` adds older ones.
Every merge input, merge output and user deliverable is compared with every registered buffer by content,
so copies in a fresh folder, symlinks, `.bin` re-saves and deleted or edited manifests are caught like
the original, and so are rescaled, transposed and partial copies (a subset of modules or of rank
components, or the buffer hidden inside a larger adapter).

Similarity is computed in factor space, never forming a d_out x d_in product: for deltas dC = B_C A_C and
dB = B_B A_B, <dC, dB>_F = sum((B_C^T B_B) * (A_C A_B^T)), and the part of dB inside dC's column and row
spaces is (Q_B^T B_B)(A_B Q_A) with Q_B, Q_A orthonormal bases of B_C and A_C^T (an r x r matrix). Over the
modules the candidate shares with a buffer (in the same or the transposed orientation), three scores:

- `piece`: cos(dC, part of dB inside dC's spaces) - the candidate is a positive piece of the buffer;
  counted only when that piece holds at least `MIN_PIECE_COVERAGE` of the buffer's norm;
- `holds`: cos(part of dC inside dB's spaces, dB) - the buffer sits inside the candidate;
- `copied`: the share of the buffer's modules that the candidate copies one by one (either score above
  `MODULE_THRESHOLD` in that module alone), which catches a partial copy mixed with other modules.

Only positive alignment counts (`THRESHOLD`): a ReinforceLoRA is trained to undo the buffer and may be
strongly anti-aligned with it, and it must pass; an exact negated copy (cos below -`NEGATED_THRESHOLD`) is
refused as well, since flipping the sign back is trivial.

Cosines miss a delta rebuilt inside the buffer's own spaces (its SVD with flattened singular values, its factors
mixed by a random r x r matrix, B M A): it jailbreaks with a cosine near zero. Two energy scores catch it
(`GuardConfig`): `share`, the part of the candidate's energy (squared Frobenius norm, over all its modules) inside
the buffer's column x row spaces; and, since diluting the copy with energy elsewhere lowers the share, `coverage`
(above) read as: the candidate's own spaces contain the buffer's, with more than a chance-level share there. Both are
invariant to the candidate's scale and the buffer's. (`inside`, the norm of the part inside relative to the
buffer's, is reported only: a customer rescales an adapter at will, and a weakly trained buffer inflates it.)
docs/reliability.md lists the cases measured.

The guard fails closed: an empty or missing registry, or a damaged entry, stops merge and every export, unless the
operator states that no buffer exists (`guard.no_buffer_registered=true`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bnr import distributed
from bnr.config import GuardConfig
from bnr.errors import BnrError
from bnr.filemodes import PRIVATE, make_private
from bnr.lora_files import LoraModule, read_lora

log = logging.getLogger(__name__)

REGISTRY_ENV = "BNR_BUFFER_REGISTRY"
ENTRY = "entry.json"
FACTORS = "factors.safetensors"

THRESHOLD = 0.9
MODULE_THRESHOLD = 0.95
MIN_PIECE_COVERAGE = 0.2
MIN_COPIED_SHARE = 0.25
NEGATED_THRESHOLD = 0.99


def registry_dir() -> Path:
    """Where the provider's buffer registry lives: $BNR_BUFFER_REGISTRY, else $BNR_CACHE/buffers."""
    env = os.environ.get(REGISTRY_ENV)
    if env:
        return Path(env).expanduser()
    from bnr.filehash import bnr_cache

    return bnr_cache() / "buffers"


def _tensor_hash(t: Tensor) -> str:
    """Hash of a tensor's values (as float32), so a .bin re-save or a dtype-preserving copy hashes the same."""
    data = t.detach().to(torch.float32).contiguous().cpu().numpy().tobytes()
    return hashlib.sha256(data + str(tuple(t.shape)).encode()).hexdigest()[:32]


def _folded(modules: dict[str, LoraModule]) -> dict[str, tuple[Tensor, Tensor]]:
    """Per module (A, scaling * B) in float64: the delta is their product."""
    return {n: (m.A.detach().double(), m.scaling * m.B.detach().double()) for n, m in modules.items()}


def content_hashes(modules: dict[str, LoraModule], *, skip_zero: bool = False) -> list[str]:
    """Sorted value hashes of every factor; `skip_zero` leaves out all-zero tensors (every untrained LoRA's B is
    zero, so they would match each other "byte for byte")."""
    return sorted(_tensor_hash(t) for m in modules.values() for t in (m.A, m.B) if not (skip_zero and not t.any()))


def is_untrained(modules: dict[str, LoraModule]) -> bool:
    """True if every module's delta is zero (an untrained or wiped LoRA: B = 0 or A = 0 everywhere)."""
    return all(not (m.A.any() and m.B.any()) or m.scaling == 0 for m in modules.values())


@dataclass
class Buffer:
    """One registered buffer: its key, where it was registered from, and its folded factors."""

    key: str
    source: str
    hashes: list[str]
    factors: dict[str, tuple[Tensor, Tensor]]


# ---------------------------------------------------------------- registry


def register(path: str | Path, source: str | Path | None = None) -> str:
    """Add the buffer adapter at `path` to the registry (idempotent); returns its key.

    `source` is the location recorded for it (default `path`), e.g. the final run folder of a run being written.
    """
    from safetensors.torch import save_file

    factors = read_lora(path, allow_buffer=True)
    if is_untrained(factors.modules):
        raise BnrError(
            f"{str(path)!r} is an untrained LoRA (every delta is zero), not registered as a buffer: train it first"
        )
    hashes = content_hashes(factors.modules)
    key = hashlib.sha256("".join(hashes).encode()).hexdigest()[:16]
    root = registry_dir()
    final = root / key
    if (final / ENTRY).is_file() or not distributed.is_main():  # one writer in a launched job: rank 0
        return key
    tmp = root / f".{key}.partial"
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for name, (A, B) in _folded(factors.modules).items():
            tensors[f"{name}.A"], tensors[f"{name}.B"] = A.float().contiguous(), B.float().contiguous()
        save_file(tensors, str(tmp / FACTORS))
        entry = {"key": key, "source": str(Path(source or path).resolve()), "modules": len(factors.modules)}
        entry |= {"registered": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "hashes": hashes}
        (tmp / ENTRY).write_text(json.dumps(entry, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        make_private(final)  # the buffer's factors: the provider's account only
        if root.stat().st_uid == os.getuid():
            os.chmod(root, PRIVATE[1])
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BnrError(
            f"cannot write the buffer registry {str(root)!r} ({e.strerror}); set {REGISTRY_ENV} to a writable folder"
        ) from None
    log.info("registered buffer %s (%s) in %s", key, path, root)
    return key


def _damaged(d: Path, why: str) -> BnrError:
    return BnrError(
        f"buffer registry entry {str(d)!r} is damaged ({why}); the guard cannot check against it: re-register that "
        "buffer (`bnr buffers register PATH`, after removing the folder) or restore the registry from its backup"
    )


def _read_entry(d: Path) -> dict[str, Any]:
    try:
        e = json.loads((d / ENTRY).read_text())
    except FileNotFoundError:
        raise _damaged(d, f"no {ENTRY}") from None
    except (OSError, ValueError) as err:
        raise _damaged(d, f"unreadable {ENTRY}: {type(err).__name__}") from None
    if not isinstance(e, dict) or e.get("key") != d.name or not isinstance(e.get("hashes"), list):
        raise _damaged(d, f"{ENTRY} lacks its key or hashes")
    return e


def entries() -> list[dict[str, Any]]:
    """The registry's entries (key, source, registered, modules, hashes), oldest first. A damaged entry (a folder
    without a readable `entry.json`) is an error naming it, never skipped; `.KEY.partial` folders (a registration
    under way) and plain files are not entries."""
    root = registry_dir()
    if not root.is_dir():
        return []
    out = [_read_entry(d) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    return sorted(out, key=lambda e: str(e.get("registered", "")))


def require_registry(what: str, policy: GuardConfig | None = None) -> list[dict[str, Any]]:
    """The registry's entries; error if it is empty or missing, unless `policy.no_buffer_registered`."""
    found = entries()
    if not found and not (policy and policy.no_buffer_registered):
        root = registry_dir()
        state = "empty" if root.is_dir() else "missing"
        raise BnrError(
            f"the buffer registry {str(root)!r} is {state}, so {what} cannot check its output for the BufferLoRA and "
            f"refuses to run; point {REGISTRY_ENV} at the registry the buffers were trained into (or `bnr buffers "
            "register PATH`), or pass guard.no_buffer_registered=true if this provider has no buffer"
        )
    return found


def buffers(what: str = "the guard", policy: GuardConfig | None = None) -> list[Buffer]:
    """Every registered buffer with its factors (error if none is registered, see `require_registry`)."""
    from safetensors.torch import load_file

    out = []
    for e in require_registry(what, policy):
        try:
            state = load_file(str(registry_dir() / e["key"] / FACTORS))
        except Exception as err:  # a damaged entry must not silently disable the guard
            raise _damaged(registry_dir() / e["key"], f"{FACTORS}: {type(err).__name__}") from None
        names = sorted({k.rsplit(".", 1)[0] for k in state})
        factors = {n: (state[f"{n}.A"].double(), state[f"{n}.B"].double()) for n in names}
        out.append(Buffer(e["key"], str(e.get("source", "")), list(e.get("hashes", [])), factors))
    return out


# ---------------------------------------------------------------- similarity (factor space)


def _inner(Ac: Tensor, Bc: Tensor, Ab: Tensor, Bb: Tensor) -> float:
    """<Bc Ac, Bb Ab>_F from r x r products."""
    return float(((Bc.T @ Bb) * (Ac @ Ab.T)).sum())


def _basis(X: Tensor) -> Tensor:
    """Orthonormal basis of the column space of X (d x r), dropping numerically null directions."""
    U, S, _ = torch.linalg.svd(X, full_matrices=False)
    top = float(S.max()) if S.numel() else 0.0
    keep = top * 1e-6 < S if top > 0 else S > 0
    return U[:, keep]


def _inside_sq(A_of: Tensor, B_of: Tensor, A: Tensor, B: Tensor) -> float:
    """||P B A R||_F^2 with P, R the projections on the column space of B_of and the row space of A_of."""
    Qb, Qa = _basis(B_of), _basis(A_of.T)
    return float(((Qb.T @ B) @ (A @ Qa)).pow(2).sum())


def _orient(Ac: Tensor, Bc: Tensor, Ab: Tensor, Bb: Tensor, transposed: bool) -> tuple[Tensor, Tensor] | None:
    """The candidate's (A, B) as is or transposed (dC^T), or None if that does not have the buffer's shape."""
    if transposed:
        Ac, Bc = Bc.T, Ac.T  # (B A)^T = A^T B^T: new B = A^T, new A = B^T
    return (Ac, Bc) if (Bc.shape[0], Ac.shape[1]) == (Bb.shape[0], Ab.shape[1]) else None


@dataclass
class Similarity:
    """How much a candidate looks like one buffer (see the module docstring)."""

    piece: float = 0.0
    coverage: float = 0.0
    holds: float = 0.0
    cosine: float = 0.0
    copied: float = 0.0
    share: float = 0.0
    inside: float = 0.0
    exact: bool = False
    transposed: bool = False

    def reason(self, policy: GuardConfig | None = None) -> str | None:
        p = policy or GuardConfig()
        if self.exact:
            return "its tensors are byte-for-byte the buffer's"
        if self.piece >= THRESHOLD and self.coverage >= MIN_PIECE_COVERAGE:
            return f"it is a copy or piece of the buffer (cos {self.piece:.3f} on {self.coverage:.0%} of its norm)"
        if self.holds >= THRESHOLD:
            return f"it contains the buffer (cos {self.holds:.3f} inside the buffer's subspaces)"
        if self.copied >= MIN_COPIED_SHARE:
            return f"{self.copied:.0%} of the buffer's modules are copied into it"
        if self.cosine <= -NEGATED_THRESHOLD and self.coverage >= 0.9:
            return f"it is the buffer with its sign flipped (cos {self.cosine:.3f})"
        if self.share >= p.max_energy_share:
            return (
                f"{self.share:.0%} of its energy lies inside the buffer's column and row spaces "
                f"(guard.max_energy_share {p.max_energy_share:g})"
            )
        if self.coverage >= p.max_coverage and self.share >= p.min_covered_share:
            return (
                f"its column and row spaces contain the buffer's ({self.coverage:.0%} of its norm, guard.max_coverage "
                f"{p.max_coverage:g}) and {self.share:.0%} of its energy lies in the buffer's column and row spaces"
            )
        return None


def _module_scores(Ac: Tensor, Bc: Tensor, Ab: Tensor, Bb: Tensor) -> tuple[float, float, float, float, float]:
    """(<dC,dB>, ||dC||^2, ||dB||^2, ||dB inside dC||^2, ||dC inside dB||^2) of one module."""
    return (
        _inner(Ac, Bc, Ab, Bb),
        _inner(Ac, Bc, Ac, Bc),
        _inner(Ab, Bb, Ab, Bb),
        _inside_sq(Ac, Bc, Ab, Bb),
        _inside_sq(Ab, Bb, Ac, Bc),
    )


def _ratio(num: float, *sq: float) -> float:
    den = math.sqrt(max(math.prod(sq), 0.0))
    return num / den if den > 0 else 0.0


def similarity(
    candidate: dict[str, tuple[Tensor, Tensor]], buffer: Buffer, hashes: set[str], *, transposed: bool = False
) -> Similarity:
    """Scores of a candidate's folded factors (or of their transposes) against one registered buffer."""
    sim = Similarity(exact=bool(hashes & set(buffer.hashes)), transposed=transposed)
    total_b = sum(_inner(A, B, A, B) for A, B in buffer.factors.values())
    total_c = sum(_inner(A, B, A, B) for A, B in candidate.values())
    sums = [0.0] * 5
    copied = 0
    for name, (Ab, Bb) in buffer.factors.items():
        if name not in candidate:
            continue
        oriented = _orient(*candidate[name], Ab, Bb, transposed)
        if oriented is None:
            continue
        ip, nc, nb, b_in_c, c_in_b = _module_scores(*oriented, Ab, Bb)
        if nc <= 0 or nb <= 0:
            continue
        sums = [s + v for s, v in zip(sums, (ip, nc, nb, b_in_c, c_in_b), strict=True)]
        piece, cover = _ratio(ip, nc, b_in_c), math.sqrt(b_in_c / nb)
        copied += (piece >= MODULE_THRESHOLD and cover >= 0.5) or _ratio(ip, nb, c_in_b) >= MODULE_THRESHOLD
    ip, nc, nb, b_in_c, c_in_b = sums
    sim.piece, sim.holds, sim.cosine = _ratio(ip, nc, b_in_c), _ratio(ip, nb, c_in_b), _ratio(ip, nc, nb)
    sim.coverage = math.sqrt(b_in_c / total_b) if total_b > 0 else 0.0
    sim.copied = copied / max(1, len(buffer.factors))
    sim.share = c_in_b / total_c if total_c > 0 else 0.0
    sim.inside = math.sqrt(c_in_b / total_b) if total_b > 0 else 0.0
    return sim


# ---------------------------------------------------------------- checks recipes call


def match(
    modules: dict[str, LoraModule], what: str = "the guard", policy: GuardConfig | None = None
) -> tuple[Buffer, str] | None:
    """The first registered buffer the adapter `modules` resembles, with the reason; None if none."""
    candidate = _folded(modules)
    hashes = set(content_hashes(modules, skip_zero=True))
    for buffer in buffers(what, policy):
        for transposed in (False, True):
            reason = similarity(candidate, buffer, hashes, transposed=transposed).reason(policy)
            if reason:
                return buffer, reason + (" (transposed)" if transposed else "")
    return None


def assert_not_buffer(
    modules: dict[str, LoraModule], where: str, what: str, policy: GuardConfig | None = None
) -> None:
    """Refuse `where` (a path or a description) if its factors match a registered buffer, or if no buffer is
    registered (unless `policy.no_buffer_registered`)."""
    found = match(modules, what, policy)
    if found is not None:
        buffer, reason = found
        raise BnrError(
            f"{where} matches the provider's BufferLoRA {buffer.key} ({buffer.source}) by content: {reason}; "
            f"{what} refuses it, the buffer never leaves the provider"
        )


def assert_path_not_buffer(path: str | Path, what: str, policy: GuardConfig | None = None) -> None:
    """`assert_not_buffer` for an adapter folder (manifest ignored: only the tensors count)."""
    assert_not_buffer(read_lora(path, allow_buffer=True).modules, repr(str(path)), what, policy)


def require_registered_buffer(path: str | Path, what: str) -> str:
    """The registry key of the buffer at `path`; error unless its tensors are exactly a registered buffer's."""
    hashes = content_hashes(read_lora(path, allow_buffer=True).modules)
    for e in entries():
        if e.get("hashes") == hashes:
            return str(e["key"])
    raise BnrError(
        f"{what}={str(path)!r} is not a registered BufferLoRA by content (its tensors match no buffer in "
        f"{str(registry_dir())!r}); point {what} to a buffer made by `bnr train-buffer`, or register your own "
        "with `bnr buffers register PATH`"
    )
