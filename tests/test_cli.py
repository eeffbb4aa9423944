from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bnr.cli import COMMANDS, main


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from bnr.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import at --help'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "pipeline" in proc.stdout and "merge" in proc.stdout


def test_core_commands_are_registered() -> None:
    for name in ("train-buffer", "train-reinforce", "finetune", "merge", "pipeline", "validate", "ls"):
        assert name in COMMANDS


def test_ls_lists_registries(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "defenses", "methods", "datasets"]) == 0
    out = capsys.readouterr().out
    assert "bnr " in out and "qr " in out and "beavertails" in out
    assert main(["ls", "nonsense"]) == 2


def test_validate_checks_data_without_models(tiny_data: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "validate",
        "model.name_or_path=/does/not/matter",
        f"user.benign_data.path={tiny_data['benign']}",
        f"user.harmful_data.path={tiny_data['harmful']}",
        "user.n=10",
        "user.p=0.2",
    ]
    assert main(argv) == 0
    assert "config OK" in capsys.readouterr().out
    assert main([*argv[:-2], "user.n=1000"]) == 2
    assert "user benign" in capsys.readouterr().err
    assert main(["validate", "user.defense=magic"]) == 2
    assert "unknown defense 'magic'; valid:" in capsys.readouterr().err


def test_missing_model_is_one_line(
    tmp_path: Path, tiny_data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "train-buffer",
        f"model.name_or_path={tmp_path / 'nomodel'}",
        f"buffer.data.path={tiny_data['harmful']}",
        f"buffer.out={tmp_path / 'b'}",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bnr: error: model folder") and "does not exist" in err[-1]
    assert not (tmp_path / "b").exists()
