"""What each defense's stage keys hold now that its cross-section defaults are options (`from_section`): for
every section a defense used to declare by hand (`reads` / `final_reads` / `final_revision`), changing it changes
exactly the key of the stage that reads it, and an unrelated section changes neither."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnr.config import load_config
from bnr.orchestrate.userjob import final_key, make_job, user_key


def _run(folder: Path, digest: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"status": "complete", "content_hash": digest}))
    return folder


def _keys(tmp_path: Path, defense: str, *over: str) -> tuple[str, str]:
    buffer, reinforce = _run(tmp_path / "buffer", "b" * 16), _run(tmp_path / "reinforce", "r" * 16)
    user = _run(tmp_path / "user", "u" * 16)
    cfg = load_config(
        None, [f"user.defense={defense}", f"user.buffer={buffer}", f"merge.reinforce={reinforce}", *over]
    )
    job = make_job(cfg)
    return user_key(job), final_key(job, user)


# defense, the section it reads (an override changing it), the stage keyed on it, an unrelated override
CASES = [
    ("safeinstruct", "reinforce.refusal_data.path=other.jsonl", "user", "reinforce.train.lr=0.5"),
    ("lisa", "reinforce.refusal_data.path=other.jsonl", "user", "reinforce.train.lr=0.5"),
    ("panacea", "buffer.data.path=other.jsonl", "user", "buffer.train.lr=0.5"),
    ("antidote", "buffer.data.path=other.jsonl", "final", "buffer.train.lr=0.5"),
    ("bnr", "merge.scale=0.25", "final", "calibrate.n_harmful=7"),
    ("bnr-buffer-only", "merge.scale=0.25", "final", "merge.alpha=0.25"),
    ("bnr-reinforce-only", "merge.alpha=0.25", "final", "calibrate.n_harmful=7"),
    ("bnr-calibrated", "merge.scale=0.25", "final", "buffer.train.lr=0.5"),
    ("bnr-calibrated", "calibrate.n_harmful=7", "final", "buffer.train.lr=0.5"),
    ("bnr-calibrated", "eval.batch_size=3", "final", "buffer.train.lr=0.5"),
]


@pytest.mark.parametrize(("defense", "changed", "stage", "unrelated"), CASES)
def test_a_section_an_option_defaults_to_keys_the_stage_that_reads_it(
    tmp_path: Path, defense: str, changed: str, stage: str, unrelated: str
) -> None:
    base = _keys(tmp_path, defense)
    assert _keys(tmp_path, defense, unrelated) == base
    user, final = _keys(tmp_path, defense, changed)
    assert (user != base[0], final != base[1]) == (stage == "user", True)  # a new UserLoRA is finalized anew


def test_an_option_set_explicitly_no_longer_follows_the_section_it_defaults_to(tmp_path: Path) -> None:
    given = "defenses.safeinstruct.data.path=mine.jsonl"
    assert _keys(tmp_path, "safeinstruct", given) == _keys(
        tmp_path, "safeinstruct", given, "reinforce.refusal_data.path=other.jsonl"
    )
    assert _keys(tmp_path, "safeinstruct", given) != _keys(tmp_path, "safeinstruct")


def test_the_calibration_revision_keys_only_its_finalize_stage(tmp_path: Path, monkeypatch) -> None:
    from bnr.defenses.bnr_calibrated import CalibratedOptions

    before = _keys(tmp_path, "bnr-calibrated")
    assert before[0] == _keys(tmp_path, "bnr")[0]  # it trains like bnr: one shared UserLoRA
    monkeypatch.setattr(CalibratedOptions.__dataclass_fields__["revision"], "default", 99)
    monkeypatch.setattr(CalibratedOptions, "revision", 99)
    after = _keys(tmp_path, "bnr-calibrated")
    assert after[0] == before[0] and after[1] != before[1]


def test_a_sweep_axis_splits_the_cells_of_the_defenses_whose_options_default_to_it() -> None:
    from bnr.orchestrate.grid import _affects, sections_read

    def splits(defense: str, key: str) -> bool:
        return _affects(key, 0.5, sections_read(defense))

    assert splits("bnr", "merge.alpha") and splits("bnr-reinforce-only", "merge.alpha")
    assert splits("bnr-buffer-only", "merge.scale") and not splits("bnr-buffer-only", "merge.alpha")
    assert splits("antidote", "buffer.data.limit") and splits("panacea", "buffer.data.limit")
    assert splits("safeinstruct", "reinforce.refusal_data.limit") and splits("lisa", "reinforce.refusal_data.limit")
    assert not splits("sft", "merge.alpha") and not splits("sft", "buffer.data.limit")
    assert splits("bnr-calibrated", "calibrate.n_harmful") and not splits("bnr", "calibrate.n_harmful")


def _locations(node: object, prefix: str = "") -> list[str]:
    """Every config key the schema marks as a location (`bnr.locations`), as a dotted override path."""
    import dataclasses

    from bnr.locations import location_fields

    found = [f"{prefix}{name}" for name in location_fields(node)]
    for f in dataclasses.fields(node):  # type: ignore[arg-type]
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            found += _locations(value, f"{prefix}{f.name}.")
    return found


def test_where_runs_are_written_or_read_enters_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every field the schema marks as a location (the root config's and each defense's own options), moved
    elsewhere, leaves every stage key as it was: the UserLoRA's and the deliverable's of every defense, every
    provider's, every section a command keys on. A parent enters a key by content (none here: no run exists),
    never by where it is. The manifest's config_hash ignores where outputs go and records where inputs come from."""
    from bnr.config import Config
    from bnr.defenses import DEFENSES, PROVIDERS, get_defense
    from bnr.locations import location_fields
    from bnr.runs.keys import stage_key
    from bnr.runs.opening import config_hash

    monkeypatch.chdir(tmp_path)
    root = _locations(Config())
    assert {"user.buffer", "user.out", "user.final_out", "merge.user", "eval.target", "eval.cache"} <= set(root)
    moved = [f"{key}=/elsewhere/{key}" for key in root]
    for name in DEFENSES.names():
        own = get_defense(name).options_class
        moved += [f"defenses.{name}.{f}=/elsewhere/{name}-{f}" for f in location_fields(own) if own is not None]

    def keys(*over: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in DEFENSES.names():
            cfg = load_config("toy", [f"user.defense={name}", *over])
            job = make_job(cfg)
            out[f"user {name}"], out[f"final {name}"] = user_key(job), final_key(job, Path("user-run"))
        cfg = load_config("toy", list(over))
        out |= {f"provider {p}": PROVIDERS.get(p).key(cfg) for p in PROVIDERS.names()}
        for s in ("eval", "merge", "align", "analyze.safety", "calibrate"):
            out[f"section {s}"] = stage_key(cfg, (s,), {})
        return out

    assert keys(*moved) == keys()
    outputs = [m for m in moved if m.split("=")[0].endswith("out") and not m.startswith("defenses.")]
    assert config_hash(load_config("toy", outputs)) == config_hash(load_config("toy", []))
    assert config_hash(load_config("toy", ["eval.target=/elsewhere/model"])) != config_hash(load_config("toy", []))
