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
    from bnr.runs.keys import LEGACY_STAGE_FILE, is_current, stage_key

    run = tmp_path / "user"
    run.mkdir()
    key = stage_key(load_config(None, []), ("user",), {})
    record = {"status": "complete", "key": str(key), "key_inputs": key.inputs}
    (run / MANIFEST).write_text(json.dumps(record))
    assert is_current(run, key)
    again = pickle.loads(pickle.dumps(key))  # a Ray task gets the same key
    assert again == key and again.inputs == key.inputs

    def recorded_by_an_older_bnr(drop: str, **change: object) -> None:
        inputs = json.loads(json.dumps(key.inputs))
        del inputs["sections"]["user"]["train"][drop]  # the field did not exist then
        inputs["sections"]["user"]["train"].update(change)
        (run / MANIFEST).write_text(json.dumps({**record, "key": "0123456789abcdef", "key_inputs": inputs}))

    recorded_by_an_older_bnr("grad_accum")
    assert is_current(run, key)  # the new field at its default: the same stage
    assert not is_current(run, stage_key(load_config(None, ["user.train.grad_accum=2"]), ("user",), {}))
    recorded_by_an_older_bnr("grad_accum", lr=1.0)
    assert not is_current(run, key)  # another value of an old field is a difference
    (run / MANIFEST).write_text(json.dumps({"status": "complete", "key": "0123456789abcdef"}))
    assert not is_current(run, key)  # no recorded inputs: only the exact key counts

    # a run written before the key moved into the manifest: its key in `stage.json` beside the old manifest
    (run / MANIFEST).write_text(json.dumps({"status": "complete", "stage": "user"}))
    assert not is_current(run, key)  # no key anywhere (made by a single command of that bnr): rebuilt
    (run / LEGACY_STAGE_FILE).write_text(json.dumps({"key": str(key), "content_hash": "0" * 16}))
    assert is_current(run, key)
    from bnr.artifacts import content_hash

    assert content_hash(run) == "0" * 16


def test_runs_made_by_single_commands_are_reused_by_the_pipeline(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "p"
    over = tiny_overrides(tiny_model_dir, tiny_data, root)
    buffer, reinforce, user, final = (str(root / s) for s in STAGES)
    assert main(["train-buffer", *over, f"buffer.out={buffer}"]) == 0
    assert main(["train-reinforce", *over, f"reinforce.buffer={buffer}", f"reinforce.out={reinforce}"]) == 0
    paths = [f"user.buffer={buffer}", f"merge.reinforce={reinforce}", f"user.out={user}", f"user.final_out={final}"]
    assert main(["finetune", *over, *paths]) == 0
    made = _stamps(root)
    assert all(read_manifest(root / s)["key"] for s in STAGES)
    parents = read_manifest(root / "reinforce")["parents"]
    assert parents == [{"role": "buffer", "path": "../buffer", "content_hash": read_manifest(buffer)["content_hash"]}]
    assert main(["pipeline", *over]) == 0
    assert _stamps(root) == made  # every stage's key matched: nothing trained again


def test_runs_written_in_the_old_shape_are_reused(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """A run directory as bnr wrote it before the key moved into the manifest: the key, its inputs and the content
    hash in `stage.json` beside a manifest without them, parents named by `stage`, no parent content hash."""
    import json

    root = tmp_path / "p"
    over = tiny_overrides(tiny_model_dir, tiny_data, root)
    assert main(["pipeline", *over]) == 0
    for stage in STAGES:
        manifest = read_manifest(root / stage)
        old = {"key": manifest.pop("key"), "content_hash": manifest.pop("content_hash")}
        old["inputs"] = manifest.pop("key_inputs")
        manifest["parents"] = [{"stage": p["role"], "path": p["path"]} for p in manifest["parents"]]
        (root / stage / MANIFEST).write_text(json.dumps(manifest))
        (root / stage / "stage.json").write_text(json.dumps(old))
    written = _stamps(root)
    assert main(["pipeline", *over]) == 0
    assert _stamps(root) == written  # read from stage.json: every key matched, nothing rebuilt
    assert main(["pipeline", *over, "merge.scale=0.7"]) == 0
    assert [s for s in STAGES if _stamps(root)[s] != written[s]] == ["final"]
    assert "key" in read_manifest(root / "final") and not (root / "final" / "stage.json").exists()
