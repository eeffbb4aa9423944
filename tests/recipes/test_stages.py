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


def test_a_run_keyed_by_an_older_schema_is_reused_only_while_the_new_fields_keep_their_defaults(
    tmp_path: Path,
) -> None:
    import json
    import pickle

    from bnr.config import load_config
    from bnr.runs.keys import STAGE_FILE, is_current, mark, stage_key

    run = tmp_path / "user"
    run.mkdir()
    (run / MANIFEST).write_text(json.dumps({"status": "complete"}))
    key = stage_key(load_config(None, []), ("user",), {})
    mark(run, key)
    assert is_current(run, key)
    again = pickle.loads(pickle.dumps(key))  # a Ray task gets the same key
    assert again == key and again.inputs == key.inputs
    record = json.loads((run / STAGE_FILE).read_text())

    def recorded_by_an_older_bnr(drop: str, **change: object) -> None:
        inputs = json.loads(json.dumps(record["inputs"]))
        del inputs["sections"]["user"]["train"][drop]  # the field did not exist then
        inputs["sections"]["user"]["train"].update(change)
        (run / STAGE_FILE).write_text(json.dumps({**record, "key": "0123456789abcdef", "inputs": inputs}))

    recorded_by_an_older_bnr("grad_accum")
    assert is_current(run, key)  # the new field at its default: the same stage
    assert not is_current(run, stage_key(load_config(None, ["user.train.grad_accum=2"]), ("user",), {}))
    recorded_by_an_older_bnr("grad_accum", lr=1.0)
    assert not is_current(run, key)  # another value of an old field is a difference
    (run / STAGE_FILE).write_text(json.dumps({"key": "0123456789abcdef"}))
    assert not is_current(run, key)  # no recorded inputs: only the exact key counts


def test_final_revision_keys_only_the_finalize_stage_of_the_defenses_that_declare_one(monkeypatch):
    from types import SimpleNamespace

    from bnr.config import load_config
    from bnr.defenses import get_defense, options_for
    from bnr.orchestrate.userjob import _defense_extra

    def job(name: str) -> SimpleNamespace:
        cfg = load_config(None, [f"user.defense={name}"])
        return SimpleNamespace(cfg=cfg, defense=get_defense(name), options=options_for(cfg, name))

    calibrated, plain = job("bnr-calibrated"), job("bnr")
    assert _defense_extra(calibrated, False)["final_revision"] == type(calibrated.defense).final_revision
    assert "final_revision" not in _defense_extra(calibrated, True)  # it trains like bnr: one shared UserLoRA
    assert _defense_extra(calibrated, True) == _defense_extra(plain, True)
    assert "final_revision" not in _defense_extra(plain, False)  # keys of defenses without one are unchanged
    monkeypatch.setattr(type(calibrated.defense), "final_revision", 99)
    assert _defense_extra(calibrated, False)["final_revision"] == 99
