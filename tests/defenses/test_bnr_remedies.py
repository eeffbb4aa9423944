"""Issue 27's remedies as options of `bnr` (defenses.bnr.*): each one's invariant, on the tiny model."""

# ruff: noqa: F811  (the `providers` fixture is test_defenses.py's, imported; tests take it by name)

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from test_defenses import providers  # noqa: F401

from bnr.artifacts import read_manifest
from bnr.cli import main
from conftest import tiny_overrides


def _argv(tiny_model_dir: Path, tiny_data: dict[str, Path], providers: Path, out: Path, *extra: str) -> list[str]:
    return [
        *tiny_overrides(tiny_model_dir, tiny_data, out),
        "user.defense=bnr",
        f"user.buffer={providers / 'buffer'}",
        f"reinforce.buffer={providers / 'buffer'}",
        f"merge.reinforce={providers / 'reinforce'}",
        f"user.out={out / 'user'}",
        f"user.final_out={out / 'final'}",
        *extra,
    ]


def _job(argv: list[str]) -> Any:
    from bnr.config import load_config
    from bnr.orchestrate import userjob

    return userjob.make_job(load_config(None, argv))


def _weights(model: Any) -> dict[str, torch.Tensor]:
    """Module name -> a copy of the (base) weight of every LoRA-targeted linear layer."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {
        n.removesuffix(".base_layer"): m.weight.detach().clone()
        for n, m in base.named_modules()
        if isinstance(m, torch.nn.Linear) and ("proj" in n) and not n.endswith(("lora_A.user", "lora_B.user"))
    }


def _metrics(run: Path, key: str) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if key in r]


def test_options_default_to_the_method_and_bad_values_are_one_line(
    tiny_model_dir: Path, tiny_data: dict[str, Path], providers: Path, tmp_path: Path, capsys: Any
) -> None:
    from bnr.orchestrate.userjob import user_key
    from bnr.train import TrainHooks

    argv = _argv(tiny_model_dir, tiny_data, providers, tmp_path)
    job = _job(argv)
    assert not job.options.schedules_buffer and job.options.reinforce_pool == []
    assert job.defense.training_hooks(job, None, None, []) == TrainHooks()  # no schedule: peft's merge, as before
    assert user_key(_job([*argv, "defenses.bnr.plain_steps=2"])) != user_key(job)
    assert user_key(_job([*argv, "defenses.bnr.buffer_scale=0.5"])) != user_key(job)
    # the pool is the ReinforceLoRA's (its provider key holds it): the UserLoRA trains the same and is reused
    pooled = _job([*argv, f"defenses.bnr.reinforce_pool=[{{path: {tiny_data['benign']}}}]"])
    assert pooled.options.reinforce_pool and user_key(pooled) == user_key(job)
    for bad in ("buffer_scale=0", "buffer_steps=1.5", "plain_steps=-1"):
        assert main(["validate", *argv, f"defenses.bnr.{bad}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"defenses.bnr.{bad.split('=')[0]}" in err[0]
    assert main(["validate", *argv, "defenses.bnr.plain_steps=2", "user.buffer_mode=separate"]) == 2
    assert "user.buffer_mode=merged" in capsys.readouterr().err


def test_buffer_scale_folds_that_fraction_of_the_buffer_and_the_switch_takes_it_out(
    tiny_model_dir: Path, tiny_data: dict[str, Path], providers: Path, tmp_path: Path
) -> None:
    """(a) the buffer's effective scale during training equals the option; (b) after the switch step the weights
    are the plain base's again."""
    from bnr import adapters
    from bnr.models import load_model_and_tokenizer
    from bnr.train import StepContext

    argv = _argv(tiny_model_dir, tiny_data, providers, tmp_path, "defenses.bnr.buffer_scale=0.25")
    job = _job([*argv, "defenses.bnr.plain_steps=1"])
    plain = _weights(load_model_and_tokenizer(job.cfg.model, for_training=True)[0])
    peft_merged, _ = load_model_and_tokenizer(job.cfg.model, for_training=True)
    full = _weights(adapters.attach_frozen(peft_merged, providers / "buffer", adapters.BUFFER, "merged"))
    changed = [n for n in plain if not torch.equal(plain[n], full[n])]
    assert changed  # the buffer moves these weights

    model = job.defense.prepare_model(job, load_model_and_tokenizer(job.cfg.model, for_training=True)[0])
    assert all(torch.equal(w, plain[n]) for n, w in _weights(model).items())  # nothing folded before training
    [schedule] = job.defense.training_hooks(job, model, None, []).callbacks
    schedule.on_train_start(model, 3)
    assert job.notes["buffer_schedule"] == {"scale": 0.25, "steps_with_buffer": 2, "total_steps": 3}
    now = _weights(model)
    for n in changed:  # W0 + 0.25 * (the buffer's delta), the delta as peft merges it
        torch.testing.assert_close(now[n] - plain[n], 0.25 * (full[n] - plain[n]), atol=1e-6, rtol=1e-4)
    assert schedule.after_optimizer_step(model, StepContext(0, 3), 1.0) == {"buffer_scale": 0.25}
    assert schedule.after_optimizer_step(model, StepContext(1, 3), 1.0) == {"buffer_scale": 0.25}
    for n, w in _weights(model).items():  # the last step: the plain base, bit for bit
        assert torch.equal(w, plain[n]), n
    assert schedule.after_optimizer_step(model, StepContext(2, 3), 1.0) == {"buffer_scale": 0.0}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["defenses.bnr.plain_steps=1"], [1.0, 1.0, 0.0]),
        (["defenses.bnr.buffer_steps=0.34", "defenses.bnr.buffer_scale=0.5"], [0.5, 0.5, 0.0]),
    ],
)
def test_the_training_log_shows_each_steps_buffer(
    tiny_model_dir: Path,
    tiny_data: dict[str, Path],
    providers: Path,
    tmp_path: Path,
    options: list[str],
    expected: list[float],
) -> None:
    """(b) the last k steps run without the buffer, per the training loop's own log (12 rows, batch 4: 3 steps)."""
    argv = _argv(tiny_model_dir, tiny_data, providers, tmp_path, *options)
    assert main(["finetune", *argv]) == 0
    user = tmp_path / "user"
    assert _metrics(user, "buffer_scale") == expected
    m = read_manifest(user)
    assert m["trained_with_buffer"] and m["defense_notes"]["buffer_schedule"]["steps_with_buffer"] == 2
    assert read_manifest(tmp_path / "final")["stage"] == "merge"


def test_reinforce_pool_trains_on_the_plain_base_with_the_pool_and_records_it(
    tiny_model_dir: Path, tiny_data: dict[str, Path], providers: Path, tmp_path: Path
) -> None:
    """(c) the ReinforceLoRA stage trains its pool of buffer-trained UserLoRAs, folds one per step into the plain
    base, records which it used, and its key changes with them."""
    from bnr.config import load_config
    from bnr.defenses import PROVIDERS
    from bnr.runs.keys import stage_key

    pool = f"[{{path: {tiny_data['benign']}}}, {{path: {tiny_data['harmful']}}}]"
    argv = _argv(tiny_model_dir, tiny_data, providers, tmp_path, f"reinforce.out={tmp_path / 'reinforce'}")
    assert main(["train-reinforce", *argv, f"defenses.bnr.reinforce_pool={pool}"]) == 0
    run = tmp_path / "reinforce"
    m = read_manifest(run)
    assert not m["trained_with_buffer"] and m["parents"] == []
    members = m["reinforce_pool"]
    assert [Path(p["run"]) for p in members] == [tmp_path / "reinforce-pool0", tmp_path / "reinforce-pool1"]
    assert [p["data"]["path"] for p in members] == [str(tiny_data["benign"]), str(tiny_data["harmful"])]
    for p in members:
        member = read_manifest(p["run"])
        assert member["trained_with_buffer"] and [q["role"] for q in member["parents"]] == ["buffer"]
        assert len(p["content_hash"]) > 8
    steps = len(_metrics(run, "loss"))
    assert steps > 2 and _metrics(run, "pool_member") == [float(t % 2) for t in range(steps)]

    reinforce = PROVIDERS.get("reinforce")

    def key(*extra: str) -> str:
        cfg = load_config(None, [*argv, *extra])
        return stage_key(cfg, reinforce.sections, {"buffer": providers / "buffer"}, reinforce.extra(cfg))

    assert reinforce.extra(load_config(None, argv)) is None  # no pool: the method's key
    one = f"defenses.bnr.reinforce_pool=[{{path: {tiny_data['benign']}}}]"
    assert len({key(), key(one), key(f"defenses.bnr.reinforce_pool={pool}")}) == 3
    assert dataclasses.asdict(load_config(None, [*argv, one]).merge) == dataclasses.asdict(
        load_config(None, argv).merge
    )
