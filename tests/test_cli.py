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


def test_validate_checks_data_without_models(
    tiny_data: dict[str, Path], tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "validate",
        f"model.name_or_path={tiny_model_dir}",
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


def _fresh(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`code` in a new interpreter (nothing imported yet) with this checkout's bnr first on the path."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    paths = [src, *(env or {}).get("PYTHONPATH", "").split(os.pathsep)]
    full = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=full)


def test_ls_does_not_import_torch() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); from bnr.cli import main; rc = main(['ls'])\n"
        "print('elapsed', time.perf_counter() - t)\n"
        "assert rc == 0 and 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import at ls'"
    )
    proc = _fresh(code)
    assert proc.returncode == 0, proc.stderr
    assert "bnr-buffer-only" in proc.stdout and "toy-harmful" in proc.stdout and "qr " in proc.stdout


def test_the_catalog_is_the_live_registries() -> None:
    """In a fresh interpreter (tests register entries of their own in this one)."""
    code = (
        "import json\nfrom bnr.recipes.listing import CATALOG, TOPICS, describe\n"
        "recorded = json.loads(CATALOG.read_text())\n"
        "stale = [t for t in TOPICS if recorded.get(t) != describe(t, live=True)]\n"
        "assert not stale, f'stale {CATALOG} ({stale}): run python -m bnr.recipes.listing'"
    )
    proc = _fresh(code)
    assert proc.returncode == 0, proc.stderr[-600:]


def test_a_plugin_package_adds_a_defense_through_an_entry_point(tmp_path: Path) -> None:
    (tmp_path / "bnr_extra.py").write_text(
        "from bnr.defenses import Defense, register\n\n"
        "@register\nclass Extra(Defense):\n    '''a third-party defense'''\n    name = 'extra'\n"
    )
    dist = tmp_path / "bnr_extra-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bnr-extra\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[bnr.defenses]\nextra = bnr_extra\n")
    code = "from bnr.cli import main; from bnr.defenses import get_defense\nmain(['ls', 'defenses'])\n"
    code += "print('found', get_defense('extra').name)"
    proc = _fresh(code, {"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "extra                a third-party defense" in proc.stdout and "found extra" in proc.stdout


def test_group_words_show_their_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--help"]) == 0
    assert "bnr analyze grads" in capsys.readouterr().out
    assert main(["config", "--help"]) == 0
    assert "bnr config show" in capsys.readouterr().out
    assert main(["config"]) == 2
    assert "`bnr config` needs a command" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["finetune", "--user.p", "0.1"], "written key=value without dashes: user.p=0.1"),
        (["finetune", "--p=0.1"], "written key=value without dashes: p=0.1"),  # not an abbreviation of --progress
        (["eval", "--limit"], "without dashes: limit=VALUE"),
    ],
)
def test_dashed_keys_get_the_key_value_form(argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and hint in capsys.readouterr().err


def test_sweep_reports_an_override_the_grid_replaces(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "-c", "toy-grid", "user.n=50"]) == 2
    err = capsys.readouterr().err
    assert "user.n=50 has no effect here: every cell of the grid takes it from sweep.n" in err
    assert "sweep.n=[50]" in err


def test_short_keys_work_in_validate_and_load_config(
    tiny_data: dict[str, Path], tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bnr.config import load_config

    cfg = load_config("toy", ["p=0.3", "n=40", "defense=sft"])
    assert (cfg.user.p, cfg.user.n, cfg.user.defense) == (0.3, 40, "sft")
    argv = ["validate", f"model.name_or_path={tiny_model_dir}", f"user.benign_data.path={tiny_data['benign']}"]
    argv += [f"user.harmful_data.path={tiny_data['harmful']}", "n=10", "p=0.2"]
    assert main(argv) == 0
    assert "n=10 p=0.2 -> 2 harmful + 8 benign" in capsys.readouterr().out


def test_env_prints_what_a_bug_report_needs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for key in ("bnr ", "commit", "python", "platform", "torch", "transformers", "peft", "cpus", "torch threads"):
        assert key in out, key
    import torch

    from bnr.provenance import cpu_kind  # what decides whether a recorded table reproduces bit for bit here

    assert f"cpu kind             {cpu_kind()}" in out and cpu_kind().endswith(torch.backends.cpu.get_cpu_capability())


def test_manifests_record_the_commit_and_the_command(stage_runs: dict[str, Path]) -> None:
    import json

    from bnr.provenance import source

    manifest = json.loads((stage_runs["buffer"] / "manifest.json").read_text())
    assert manifest["command"].startswith("bnr train-buffer ") and manifest["source"] == source()
    assert manifest["source"]["commit"] is None or len(manifest["source"]["commit"]) == 40


def test_a_plug_in_config_section_loads_without_torch() -> None:
    """The toy world's `toy` section is registered by the plug-in (bnr.toy.config), resolved when a config is first
    built; building one, and a command's --help listing its keys, import neither torch nor the plug-in registries'
    heavy parts."""
    code = (
        "import sys, contextlib, io\nfrom bnr.config import load_config\n"
        "cfg = load_config('toy-demo', ['toy.threads=3'])\n"
        "assert type(cfg.toy).__module__ == 'bnr.toy.config' and cfg.toy.threads == 3, cfg.toy\n"
        "from bnr.cli import main\nbuf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n    try:\n        main(['demo', '--help'])\n"
        "    except SystemExit:\n        pass\n"
        "assert 'toy.base.held_in_min' in buf.getvalue()\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'"
    )
    proc = _fresh(code)
    assert proc.returncode == 0, proc.stderr
