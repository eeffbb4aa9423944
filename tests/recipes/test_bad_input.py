"""Bad input: one line naming the problem, exit code 2, no partial artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnr.cli import main
from conftest import tiny_overrides


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in err if line.startswith("bnr: error:")]
    return rc, lines[-1] if lines else ""


@pytest.fixture()
def over(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path) -> list[str]:
    return tiny_overrides(tiny_model_dir, tiny_data, tmp_path)


def _no_artifacts(tmp_path: Path, name: str) -> None:
    assert not (tmp_path / name).exists() and not (tmp_path / f"{name}.partial").exists()


def test_unknown_key(over: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, line = _run(["finetune", *over, "user.lr=1"], capsys)
    assert rc == 2 and "unknown config key 'user.lr'" in line


def test_p_out_of_range(over: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, line = _run(["finetune", *over, "user.defense=none", "user.p=1.2", f"user.out={tmp_path / 'u'}"], capsys)
    assert rc == 2 and "user.p must be in [0, 1]" in line
    _no_artifacts(tmp_path, "u")


def test_n_larger_than_data(over: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, line = _run(["finetune", *over, "user.defense=none", "user.n=500", f"user.out={tmp_path / 'u'}"], capsys)
    assert rc == 2 and "but the dataset has only" in line
    _no_artifacts(tmp_path, "u")


def test_malformed_data_names_file_and_line(
    over: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n{broken\n")
    argv = ["train-buffer", *over, f"buffer.data.path={bad}", f"buffer.out={tmp_path / 'b'}"]
    rc, line = _run(argv, capsys)
    assert rc == 2 and "bad.jsonl:2: malformed JSON line" in line
    _no_artifacts(tmp_path, "b")


def test_missing_parent_run(over: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["finetune", *over, f"user.buffer={tmp_path / 'nope'}", f"user.out={tmp_path / 'u'}"]
    rc, line = _run(argv, capsys)
    assert rc == 2 and "missing parent run" in line
    _no_artifacts(tmp_path, "u")
    rc, line = _run(["merge", f"user={tmp_path / 'nope'}", f"reinforce={tmp_path}", f"out={tmp_path / 'm'}"], capsys)
    assert rc == 2 and "missing user adapter" in line


def test_complete_run_is_not_overwritten(over: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["finetune", *over, "user.defense=none", f"user.out={tmp_path / 'u'}"]
    assert main(argv) == 0
    before = (tmp_path / "u" / "manifest.json").read_text()
    rc, line = _run(argv, capsys)
    assert rc == 2 and "already holds a complete run" in line
    assert (tmp_path / "u" / "manifest.json").read_text() == before
    assert main([*argv, "overwrite=true"]) == 0


def test_nan_loss_keeps_checkpoint_and_no_complete_run(
    over: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "finetune",
        *over,
        "user.defense=none",
        f"user.out={tmp_path / 'u'}",
        "user.train.lr=1e36",
        "user.train.warmup_ratio=0",
        "user.train.save_every=1",
        "user.train.max_grad_norm=null",
        "user.train.epochs=3",
    ]
    rc, line = _run(argv, capsys)
    assert rc == 2 and "loss became" in line and "last good checkpoint is kept" in line
    assert not (tmp_path / "u").exists()
    assert (tmp_path / "u.partial" / "checkpoints" / "last.pt").is_file()


def test_a_refusal_after_the_run_was_opened_leaves_no_partial_folder(
    over: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import bnr.train
    from bnr.errors import BnrError

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise BnrError("this training cannot run here; use another setting")  # e.g. FSDP with step callbacks

    monkeypatch.setattr(bnr.train, "train", refuse)
    rc, line = _run(["finetune", *over, "user.defense=none", f"user.out={tmp_path / 'u'}"], capsys)
    assert rc == 2 and "cannot run here" in line
    _no_artifacts(tmp_path, "u")


def test_resume_continues_an_interrupted_run(over: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bnr.train
    from bnr.artifacts import read_manifest
    from bnr.config import load_config
    from bnr.recipes import finetune

    cfg = load_config(
        None,
        [
            *over,
            "user.defense=none",
            f"user.out={tmp_path / 'u'}",
            "user.train.save_every=1",
            "user.train.epochs=2",
            "resume=true",
        ],
    )
    real_train = bnr.train.train

    def crash_after_two_steps(*args, **kwargs):  # type: ignore[no-untyped-def]
        real_train(*args, **{**kwargs, "stop_after": 2})
        raise KeyboardInterrupt

    monkeypatch.setattr(bnr.train, "train", crash_after_two_steps)
    with pytest.raises(KeyboardInterrupt):
        finetune.run(cfg)
    assert (tmp_path / "u.partial" / "checkpoints" / "last.pt").is_file() and not (tmp_path / "u").exists()
    monkeypatch.setattr(bnr.train, "train", real_train)
    finetune.run(cfg)
    manifest = read_manifest(tmp_path / "u")
    assert manifest["training"]["resumed_from"] == 2 and manifest["training"]["steps"] == 6


def test_resume_accepts_a_field_added_to_the_schema_later_only_at_its_default(
    over: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import bnr.train

    argv = ["finetune", *over, "user.defense=none", f"user.out={tmp_path / 'u'}", "user.train.save_every=1"]
    argv += ["user.train.epochs=2", "resume=true"]
    real_train = bnr.train.train

    def crash_after_two_steps(*args, **kwargs):  # type: ignore[no-untyped-def]
        real_train(*args, **{**kwargs, "stop_after": 2})
        raise KeyboardInterrupt

    monkeypatch.setattr(bnr.train, "train", crash_after_two_steps)
    assert main(argv) != 0 and not (tmp_path / "u").exists()
    monkeypatch.setattr(bnr.train, "train", real_train)
    capsys.readouterr()
    partial = tmp_path / "u.partial" / "manifest.json"  # the partial manifest records the stage key
    recorded = json.loads(partial.read_text())
    assert recorded["status"] == "partial" and recorded["key_inputs"]["extra"]["user"]["train"]["epochs"] == 2.0

    def written_before(field: str) -> None:
        inputs = json.loads(json.dumps(recorded["key_inputs"]))
        del inputs["extra"]["user"]["train"][field]
        partial.write_text(json.dumps({**recorded, "key": "0123456789abcdef", "key_inputs": inputs}))

    # a checkpoint made before `user.train.epochs` (non-default here) existed: that is a real difference
    written_before("epochs")
    rc, line = _run(argv, capsys)
    assert rc == 2 and "user.train.epochs ('<unset>' -> 2.0)" in line
    # one made before `user.train.grad_accum` existed (its default here): the same config, so it resumes
    written_before("grad_accum")
    assert main(argv) == 0 and (tmp_path / "u").is_dir()


def test_mismatched_adapters_are_refused(
    over: list[str], tiny_data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bnr.tiny import build_tiny_model_dir
    from conftest import corpus

    wide = build_tiny_model_dir(tmp_path / "wide", corpus(), hidden=48, intermediate=96)
    a = ["finetune", *over, "user.defense=none", f"user.out={tmp_path / 'a'}"]
    b = ["finetune", *tiny_overrides(wide, tiny_data, tmp_path), "user.defense=none", f"user.out={tmp_path / 'b'}"]
    c = ["finetune", *over, "user.defense=none", f"user.out={tmp_path / 'c'}", "user.lora.target_modules=up_proj"]
    assert main(a) == 0 and main(b) == 0 and main(c) == 0
    for plain in ("b", "c"):  # merge checks a bnr run's role; as plain PEFT folders they may be either input
        (tmp_path / plain / "manifest.json").unlink()
    rc, line = _run(
        [
            "merge",
            f"user={tmp_path / 'a'}",
            f"reinforce={tmp_path / 'b'}",
            f"out={tmp_path / 'm'}",
            "allow_base_mismatch=true",
        ],
        capsys,
    )
    assert rc == 2 and "shape" in line
    _no_artifacts(tmp_path, "m")
    rc, line = _run(
        ["merge", f"user={tmp_path / 'a'}", f"reinforce={tmp_path / 'b'}", f"out={tmp_path / 'm'}"], capsys
    )
    assert rc == 2 and "base" in line
    d = ["finetune", *over, "user.defense=none", f"user.out={tmp_path / 'd'}", "user.lora.target_modules=gate_proj"]
    assert main(d) == 0
    (tmp_path / "d" / "manifest.json").unlink()
    argv = ["merge", f"user={tmp_path / 'c'}", f"reinforce={tmp_path / 'd'}", f"out={tmp_path / 'm'}"]
    rc, line = _run(argv, capsys)
    assert rc == 2 and "no module in common" in line
    _no_artifacts(tmp_path, "m")
