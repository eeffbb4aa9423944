"""Section 5: one-line errors for corrupt files, bad adapter configs, config loops, bad paths, interruptions."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from reliability_runs import cli

from bnr.artifacts import is_complete
from bnr.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]


def _damage(kind: str, folder: Path) -> None:
    st = folder / "adapter_model.safetensors"
    data = st.read_bytes()
    if kind == "truncated safetensors":
        st.write_bytes(data[: len(data) // 2])
    elif kind == "random safetensors":
        st.write_bytes(os.urandom(len(data)))
    elif kind == "empty safetensors":
        st.write_bytes(b"")
    else:
        st.unlink()
        (folder / "adapter_model.bin").write_bytes(b"" if kind == "empty bin" else os.urandom(4096))


DAMAGE = ["truncated safetensors", "random safetensors", "empty safetensors", "random bin", "empty bin"]


def _corrupt_copy(src: Path, dst: Path, kind: str) -> Path:
    shutil.copytree(src, dst)
    _damage(kind, dst)
    return dst


@pytest.mark.parametrize("kind", DAMAGE)
def test_corrupt_weights_merge(
    kind: str, stage_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _corrupt_copy(stage_runs["user"], tmp_path / "bad", kind)
    rc, line = cli(["merge", f"user={bad}", f"reinforce={stage_runs['reinforce']}", f"out={tmp_path / 'm'}"], capsys)
    assert rc == 2 and "not a readable weights file" in line, line


@pytest.mark.parametrize("kind", DAMAGE)
def test_corrupt_weights_eval_and_finetune_buffer(
    kind: str,
    stage_runs: dict[str, Path],
    tiny_over: list[str],
    tiny_data: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = _corrupt_copy(stage_runs["user"], tmp_path / "bad", kind)
    ev = ["eval", f"target={bad}", *tiny_over, "judges=keyword", "benchmarks=harmful", "eval.cache=null"]
    rc, line = cli([*ev, f"eval.data.harmful.path={tiny_data['harmful']}", f"eval.out={tmp_path / 'e'}"], capsys)
    assert rc == 2 and "not a readable weights file" in line, line
    buf = _corrupt_copy(stage_runs["buffer"], tmp_path / "badbuf", kind)
    rc, line = cli(
        ["finetune", *tiny_over, "user.defense=bnr-buffer-only", f"user.buffer={buf}", f"user.out={tmp_path / 'u'}"],
        capsys,
    )
    assert rc == 2 and "not a readable weights file" in line, line


CONFIGS: dict[str, tuple[Callable[[dict], object], str]] = {
    "a list": (lambda c: [c], "is not a JSON object"),
    "no r": (lambda c: {k: v for k, v in c.items() if k != "r"}, "has no 'r'"),
    "r = 0": (lambda c: c | {"r": 0}, "has r=0"),
    "r a string": (lambda c: c | {"r": "4"}, "has r='4'"),
    "no lora_alpha": (lambda c: {k: v for k, v in c.items() if k != "lora_alpha"}, "has no 'lora_alpha'"),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_bad_adapter_config(
    case: str, stage_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit, expected = CONFIGS[case]
    bad = tmp_path / "bad"
    shutil.copytree(stage_runs["user"], bad)
    (bad / "manifest.json").unlink()
    cfg = json.loads((bad / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps(edit(cfg)))
    rc, line = cli(["merge", f"user={bad}", f"reinforce={stage_runs['reinforce']}", f"out={tmp_path / 'm'}"], capsys)
    assert rc == 2 and expected in line, line


def test_inherits_loop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.yaml").write_text(f"inherits: {tmp_path / 'b.yaml'}\nseed: 1\n")
    (tmp_path / "b.yaml").write_text(f"inherits: {tmp_path / 'a.yaml'}\n")
    rc, line = cli(["validate", "-c", str(tmp_path / "a.yaml")], capsys)
    assert rc == 2 and "inherits from itself" in line, line
    (tmp_path / "c.yaml").write_text("inherits: c.yaml\n")
    rc, line = cli(["validate", "-c", str(tmp_path / "c.yaml")], capsys)
    assert rc == 2 and "inherits from itself" in line, line


def test_out_pointing_at_a_file(
    stage_runs: dict[str, Path], tiny_over: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "a-file"
    f.write_text("keep me")
    for out in (f, f / "sub"):
        rc, line = cli(
            ["merge", f"user={stage_runs['user']}", f"reinforce={stage_runs['reinforce']}", f"out={out}"], capsys
        )
        assert rc == 2 and "choose another out=" in line, line
    rc, line = cli(["train-buffer", *tiny_over, f"buffer.out={f}"], capsys)
    assert rc == 2 and "is a file" in line and f.read_text() == "keep me"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("buffer.train.lr=inf", "'buffer.train.lr' is inf"),
        ("user.train.lr=.nan", "'user.train.lr' is nan"),
        ("merge.scale=inf", "'merge.scale' is inf"),
        ("sweep.p=[0.1,.inf]", "'sweep.p' holds a non-finite number"),
    ],
)
def test_validate_catches_non_finite_numbers(override: str, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, line = cli(["validate", "-c", "toy", override], capsys)
    assert rc == 2 and expected in line, line


def test_validate_catches_missing_and_wrong_parents(
    stage_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, line = cli(["validate", "-c", "toy", f"user.buffer={tmp_path / 'nope'}"], capsys)
    assert rc == 2 and "user.buffer=" in line and "missing parent run" in line, line
    rc, line = cli(["validate", "-c", "toy", f"reinforce.buffer={stage_runs['user']}"], capsys)
    assert rc == 2 and "reinforce.buffer expects a 'buffer' run" in line, line
    assert main(["validate", "-c", "toy"]) == 0  # parents the config's own stages write are fine


def test_kill_during_overwrite_leaves_no_complete_old(
    stage_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["merge", f"user={stage_runs['user']}", f"reinforce={stage_runs['reinforce']}", f"out={tmp_path / 'm'}"]
    assert main(argv) == 0
    real_replace, calls = os.replace, []

    def killed_after_first_move(src: object, dst: object) -> None:
        calls.append(dst)
        if str(dst).endswith(".old"):
            real_replace(src, dst)  # type: ignore[arg-type]
            raise KeyboardInterrupt
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", killed_after_first_move)
    assert main([*argv, "overwrite=true"]) == 130
    monkeypatch.undo()
    assert any(str(c).endswith(".old") for c in calls)
    assert not is_complete(tmp_path / "m.old") and not is_complete(tmp_path / "m")


@pytest.mark.parametrize("launched", [False, True], ids=["one process", "a launched rank"])
def test_a_signal_inside_an_extensions_import_is_an_interrupt_not_a_traceback(
    launched: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A SIGTERM that lands while a C extension initialises reaches bnr as that extension's error, its cause the
    KeyboardInterrupt (CI saw scipy's `ImportError: initialization failed` on a rank torchrun stopped during its
    imports). It ends the command as an interrupt: one line, or none on a launched rank (the launcher speaks)."""
    from bnr import plugins

    def stopped_while_importing() -> None:
        try:
            raise KeyboardInterrupt("SIGTERM")
        except KeyboardInterrupt as e:
            raise ImportError("initialization failed") from e

    monkeypatch.setattr(plugins, "load", stopped_while_importing)
    if launched:
        monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["finetune", "-c", "toy"]) == 130
    err = capsys.readouterr().err
    if launched:
        assert err == ""
    else:
        assert err.strip() == "bnr: interrupted; rerun the same command with resume=true to continue", err


def _readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S) + re.findall(r"`(bnr [^`]+)`", text)
    cmds = []
    for block in blocks:
        for raw in block.replace("\\\n", " ").splitlines():
            for part in raw.split("#")[0].split("&&"):
                # the command itself: up to a pipe, without shell redirections
                words = [w for w in shlex.split(part.split("|")[0]) if not re.match(r"^\d*>", w)]
                if words and words[0] == "bnr" and len(words) > 1:
                    cmds.append(words[1:])
    return cmds


def test_every_readme_command_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each `bnr ...` line in the README parses and its config loads (recipes stubbed: nothing runs)."""
    import importlib

    ran: list[str] = []
    for cmd in COMMANDS.values():
        module = importlib.import_module(cmd.module)
        monkeypatch.setattr(module, "run" if cmd.takes_config else "main", lambda *a, _m=cmd.module: ran.append(_m))
    from bnr import distributed

    launched: list[list[str]] = []  # `--nproc N` lines start no process here; the launcher gets the command

    def launch(argv: list[str], nproc: int, fsdp: bool = False) -> int:
        launched.append(argv)
        ran.append("launch")
        return 0

    monkeypatch.setattr(distributed, "launch", launch)
    commands = _readme_commands()
    assert any("--protocol" in c for c in commands)
    helps = [w for w in commands if "--help" in w]
    for words in commands:
        if words in helps:
            with pytest.raises(SystemExit) as exit_info:  # argparse prints the help and exits 0
                main(words)
            assert exit_info.value.code == 0, words
        else:
            assert main(words) == 0, words
    assert len(ran) == len(commands) - len(helps)
    assert launched and all(not any(w.startswith(("--nproc", "--fsdp")) for w in argv) for argv in launched)
