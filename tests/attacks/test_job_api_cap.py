"""The job API's bounds (`job_api`): one policy value that the service checks a tenant's job against and that
`bnr attack-search`'s customer draws within; the search's space is the tunable `JobKnobs` fields."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import bnr.attacks  # noqa: F401  (the attack check runs at config load)
from bnr.cli import main
from bnr.config import load_config
from bnr.errors import BnrError
from bnr.orchestrate import JobKnobs, job_config
from bnr.orchestrate.api import TUNABLE_KNOBS
from bnr.recipes import attack_search


def test_the_search_space_is_the_job_api_knobs() -> None:
    assert set(TUNABLE_KNOBS) == {f.name for f in dataclasses.fields(JobKnobs)} - {"seed"}
    assert set(attack_search.CHOICES) == set(TUNABLE_KNOBS)
    assert set(load_config("toy").job_api.bounds()) == set(TUNABLE_KNOBS)
    space = attack_search.space(load_config("toy-attacks"))
    # asked in the order the search asked before its knobs were JobKnobs' (a seeded study draws the same jobs)
    assert list(space) == ["attack", "p", "n", "n_epochs", "learning_rate_multiplier", "batch_size"]
    assert space["learning_rate_multiplier"] == [0.5, 1.0, 2.0, 4.0]  # the default bounds admit every choice


def test_a_trial_trains_as_the_service_trains_the_same_knobs(tmp_path: Path) -> None:
    cfg = load_config("toy-attacks")
    knobs = JobKnobs(n_epochs=5.0, learning_rate_multiplier=4.0, batch_size=8)
    job = {"attack": "harmful-mix", "p": 0.1, "n": 500, **dataclasses.asdict(knobs)}
    trial = attack_search.trial_config(cfg, "sft", 0, job)
    (tmp_path / "d.jsonl").write_text('{"instruction": "hi", "output": "yo"}\n')
    service = job_config(tmp_path / "d.jsonl", out=tmp_path / "u", defense="sft", knobs=knobs, settings=cfg)
    assert trial.user.train == service.user.train
    assert (trial.user.train.lr, trial.user.train.epochs, trial.user.train.batch_size) == (2e-2, 5.0, 8)
    assert (trial.user.attack, trial.user.defense, trial.user.p, trial.user.n) == ("harmful-mix", "sft", 0.1, 500)
    assert cfg.attacks == trial.attacks  # the knobs are the job's, not an attack option


def test_one_cap_binds_the_service_and_the_attacker() -> None:
    pytest.importorskip("fastapi")  # the `service` extra
    from bnr.service.errors import ApiError
    from bnr.service.jobspec import resolve
    from bnr.service.settings import BasePolicy

    capped = load_config("toy-attacks-capped")
    assert capped.job_api.max_lr_multiplier == 2.0
    # the attacker: the choice above the cap is gone, the rest of the space is the uncapped preset's
    space = attack_search.space(capped)
    assert space["learning_rate_multiplier"] == [0.5, 1.0, 2.0]
    assert {k: v for k, v in space.items() if k != "learning_rate_multiplier"} == {
        k: v for k, v in attack_search.space(load_config("toy-attacks")).items() if k != "learning_rate_multiplier"
    }
    # the service, on a base with the same preset: x2 admitted, x4 refused naming the knob and the range
    policy = BasePolicy(name="toy", preset="toy-attacks-capped", defense="bnr")
    assert resolve(policy, {"learning_rate_multiplier": 2})["learning_rate_multiplier"] == 2.0
    with pytest.raises(ApiError) as e:
        resolve(policy, {"learning_rate_multiplier": 4})
    assert e.value.status == 400 and "[0.01, 2.0]" in str(e.value.message)
    # the same value moved by a provider override moves both
    loose = dataclasses.replace(policy, overrides=["job_api.max_lr_multiplier=4"])
    assert resolve(loose, {"learning_rate_multiplier": 4})["learning_rate_multiplier"] == 4.0
    assert attack_search.space(load_config("toy-attacks-capped", ["job_api.max_lr_multiplier=4"]))[
        "learning_rate_multiplier"
    ] == [0.5, 1.0, 2.0, 4.0]


def test_a_space_outside_the_bounds_and_bad_bounds_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(BnrError, match=r"attack_search.lr_multipliers: none of \[4.0\] is admitted"):
        attack_search.check(load_config("toy-attacks-capped", ["attack_search.lr_multipliers=[4]"]))
    for bad, says in (
        ("job_api.max_lr_multiplier=0.001", "job_api.min_lr_multiplier must be > 0 and <="),
        ("job_api.max_epochs=0", "job_api.max_epochs and job_api.max_batch_size must be >= 1"),
    ):
        rc = main(["attack-search", "-c", "toy-attacks", bad, f"attack_search.out={tmp_path}"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc != 0 and len(err) == 1 and says in err[0], err
    assert not any(tmp_path.iterdir())  # nothing written
