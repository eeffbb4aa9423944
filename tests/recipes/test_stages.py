"""Stage reuse keyed on config sections and parents' content: a changed knob retrains what depends on it."""

from __future__ import annotations

from pathlib import Path

from bnr.artifacts import MANIFEST, read_manifest
from bnr.cli import main
from conftest import tiny_overrides

STAGES = ("buffer", "reinforce", "user", "final")


def _stamps(root: Path) -> dict[str, int]:
    """A rebuilt stage gets a new manifest file (atomic rename); a reused one keeps it."""
    return {s: (root / s / MANIFEST).stat().st_ino * 10**20 + (root / s / MANIFEST).stat().st_mtime_ns for s in STAGES}


def test_changed_knob_retrains_downstream_unchanged_reuses(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "p"
    over = tiny_overrides(tiny_model_dir, tiny_data, root)
    assert main(["pipeline", *over]) == 0
    first = _stamps(root)
    # unchanged (a cosmetic knob aside): everything reused
    assert main(["pipeline", *over, "user.train.progress=true"]) == 0
    assert _stamps(root) == first
    # a finalize knob: only the deliverable is redone
    assert main(["pipeline", *over, "merge.scale=0.7"]) == 0
    second = _stamps(root)
    assert [s for s in STAGES if second[s] != first[s]] == ["final"]
    assert read_manifest(root / "final")["merge"]["scale"] == 0.7
    # a provider knob: the buffer and everything built on it are retrained
    assert main(["pipeline", *over, "merge.scale=0.7", "buffer.train.lr=1e-3"]) == 0
    third = _stamps(root)
    assert all(third[s] != second[s] for s in STAGES)
    # a user knob: the user stage and the deliverable, not the providers
    assert main(["pipeline", *over, "merge.scale=0.7", "buffer.train.lr=1e-3", "user.train.lr=1e-3"]) == 0
    fourth = _stamps(root)
    assert [s for s in STAGES if fourth[s] != third[s]] == ["user", "final"]
