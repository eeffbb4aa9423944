from __future__ import annotations

import os
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


def test_command_help_lists_its_config_keys_from_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    from bnr.config_docs import key_docs

    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    out = capsys.readouterr().out
    user_keys = [d for d in key_docs() if d.key.startswith("user.")]
    assert user_keys and all(f"    {d.key} " in out for d in user_keys)  # every key of the section, none forgotten
    assert "user.train.lr" in out and "float = 1e-05" in out and "peak learning rate (AdamW)" in out
    assert "user.p" in out and "(alias p)" in out and "inherits:" in out
    assert "eval.target" not in out  # another command's section


def test_config_show_prints_the_resolved_config(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from bnr.config import load_config, to_dict

    assert main(["config", "show", "-c", "toy", "user.p=0.25", "seed=7"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown == to_dict(load_config("toy", ["user.p=0.25", "seed=7"]))
    assert shown["user"]["p"] == 0.25 and shown["model"]["name_or_path"] == "builtin:toy"
    assert main(["config", "show", "-c", "toy", "user.q=1"]) == 2
    assert "unknown config key 'user.q'" in capsys.readouterr().err


def test_global_output_flags_before_or_after_the_command() -> None:
    from bnr.cli import _build_parser

    assert _build_parser().parse_args(["--quiet", "ls"]).quiet
    assert _build_parser().parse_args(["ls", "-q"]).quiet
    args = _build_parser().parse_args(["pipeline", "--progress"])
    assert args.progress and not args.quiet
    with pytest.raises(SystemExit):
        _build_parser().parse_args(["--quiet", "--progress", "ls"])


def test_python_m_bnr_and_a_closed_pipe() -> None:
    """`python -m bnr ls | head -1`: the reader leaves early; bnr stops without a BrokenPipe traceback."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bnr", "ls"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().decode().strip() == "presets:"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 141) and "Traceback" not in err and "BrokenPipe" not in err, err
