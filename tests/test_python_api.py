"""The Python API (`bnr.orchestrate`, docs/python.md): the documented example runs as written on the toy world,
a job given the same arguments is reused, and the CLI's `bnr finetune` makes the same UserLoRA."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from bnr.config import load_config
from bnr.errors import BnrError
from bnr.orchestrate import JobKnobs, fine_tune

DOC = Path(__file__).resolve().parents[1] / "docs" / "python.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert blocks, "docs/python.md should hold its runnable examples"
    return "\n".join(blocks)  # the blocks continue each other (the TRL one uses the first one's providers)


def test_the_documented_example_runs_on_the_toy_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {}
    exec(compile(_example(), str(DOC), "exec"), scope)  # the doc's own example, run as written
    assert set(scope["summary"]["results"]) == {"harmful", "over-refusal", "sst2"}  # the toy benchmarks report so
    assert (tmp_path / "runs/jobs/job-1-merged/manifest.json").is_file()
    stages = [(e["stage"], e["status"]) for e in scope["events"] if e["event"] == "stage"]
    assert stages == [("user", "started"), ("user", "done"), ("final", "started"), ("final", "done")]
    assert any(e["event"] == "train" and "loss" in e for e in scope["events"])
    assert scope["final"] == Path("runs/trl/user-final") and (tmp_path / "runs/trl/user-final/README.md").is_file()


def test_the_api_names_stay_functions_when_every_orchestration_module_is_imported() -> None:
    """A submodule import sets the package attribute of its name: none may shadow an API function."""
    import importlib
    import pkgutil

    import bnr.orchestrate as orchestrate

    for module in pkgutil.iter_modules(orchestrate.__path__):
        importlib.import_module(f"bnr.orchestrate.{module.name}")
    assert all(callable(getattr(orchestrate, name)) for name in orchestrate.__all__)
    assert not any(isinstance(getattr(orchestrate, name), type(orchestrate)) for name in orchestrate.__all__)


def _settings(tiny_over: list[str]) -> Any:
    return load_config(None, tiny_over)


def test_a_job_with_the_same_arguments_is_reused_and_matches_the_cli(
    tiny_over: list[str], tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    from bnr.cli import main

    settings = _settings(tiny_over)
    knobs = JobKnobs(n_epochs=1, batch_size=4, learning_rate_multiplier=2.0, seed=3)
    first = fine_tune(tiny_data["benign"], out=tmp_path / "api", defense="sft", knobs=knobs, settings=settings)
    events: list[dict[str, Any]] = []
    data, out = tiny_data["benign"], tmp_path / "api"
    again = fine_tune(data, out=out, defense="sft", knobs=knobs, settings=settings, on_event=events.append)
    assert again == first and first.deliverable == first.user_run
    assert (events[0]["stage"], events[0]["status"]) == ("user", "reused")  # sft's finalize is a no-op

    lr = settings.user.train.lr * 2.0
    argv = [*tiny_over, "user.defense=sft", f"user.benign_data.path={tiny_data['benign']}", "user.p=0", "seed=3"]
    argv += ["user.n=24", f"user.train.lr={lr}", f"user.out={tmp_path / 'cli'}"]
    assert main(["finetune", *argv]) == 0
    ours, theirs = (load_file(str(p / "adapter_model.safetensors")) for p in (first.user_run, tmp_path / "cli"))
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)


def test_bad_job_arguments_are_one_clear_error(
    tiny_over: list[str], tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    settings = _settings(tiny_over)
    with pytest.raises(BnrError, match="training data is empty"):
        fine_tune([], out=tmp_path / "empty", defense="sft", settings=settings)
    with pytest.raises(BnrError, match="unknown defense 'nope'"):
        fine_tune(tiny_data["benign"], out=tmp_path / "x", defense="nope", settings=settings)
