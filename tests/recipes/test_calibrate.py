"""`bnr calibrate` end to end on the tiny model: a small search, the chosen merge written as a merge run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bnr.artifacts import is_complete, path_from, read_manifest
from bnr.cli import main
from bnr.data.records import Record
from bnr.errors import BnrError
from bnr.eval.benchmarks import BENCHMARKS, Benchmark, percent
from bnr.orchestrate.grid import read_cell
from conftest import BENIGN, HARMFUL, REFUSAL, tiny_overrides, write_records


class ExactOutput(Benchmark):
    """FA stand-in for the tiny model: completion starts with the record's output."""

    name = "test-exact"
    metric = "accuracy"
    default_max_new_tokens = 4

    def score(self, records: list[Record], completions: list[str]) -> list[dict[str, Any]]:
        return [{"correct": c.strip().startswith(r.output.split()[0])} for r, c in zip(records, completions)]

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, float]:
        return {"accuracy": percent([r["correct"] for r in rows])}


if "test-exact" not in BENCHMARKS.names():
    BENCHMARKS.add("test-exact", ExactOutput)


@pytest.fixture(scope="module")
def runs(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("calib")
    # user data with spare records (the held-out FA slice), evaluation and calibration sets that do not overlap
    spare = [(f"{q} {w}", a) for w in ("one", "two", "three", "four", "five", "six") for q, a in BENIGN]
    user_benign = write_records(root / "user_benign.jsonl", spare, "ub")
    eval_h = write_records(root / "eval_h.jsonl", [(q + " now", REFUSAL) for q, _ in HARMFUL], "eh")
    eval_b = write_records(root / "eval_b.jsonl", [(q + " please", a) for q, a in BENIGN], "eb")
    eval_fa = write_records(root / "eval_fa.jsonl", [(q + " today", a) for q, a in BENIGN], "ef")
    cal_h = write_records(root / "cal_h.jsonl", [(q, REFUSAL) for q, _ in HARMFUL], "ch")
    cal_b = write_records(root / "cal_b.jsonl", [(f"{q} again", a) for q, a in BENIGN], "cb")
    over = tiny_overrides(tiny_model_dir, {**tiny_data, "benign": user_benign}, root)
    steps = [
        ["train-buffer", *over, f"buffer.out={root / 'buffer'}"],
        [
            "train-reinforce",
            *over,
            f"reinforce.buffer={root / 'buffer'}",
            f"reinforce.out={root / 'reinforce'}",
            f"reinforce.lookalike_data.path={tiny_data['benign']}",  # look-alikes answered normally
            "reinforce.n_lookalike=3",
        ],
        [
            "finetune",
            *over,
            "user.defense=bnr-buffer-only",  # the UserLoRA bnr trains; calibrate merges it below
            f"user.buffer={root / 'buffer'}",
            f"user.out={root / 'user'}",
        ],
    ]
    for argv in steps:
        assert main(argv) == 0, argv
    calib = [
        f"model.name_or_path={tiny_model_dir}",
        f"user={root / 'user'}",
        f"reinforce={root / 'reinforce'}",
        "eval.benchmarks=[harmful,over-refusal,test-exact]",
        "eval.judges=[keyword]",
        "eval.template=alpaca",
        "eval.max_new_tokens=4",
        f"eval.data.harmful.path={eval_h}",
        f"eval.data.over-refusal.path={eval_b}",
        f"eval.data.test-exact.path={eval_fa}",
        f"calibrate.harmful_data.path={cal_h}",
        f"calibrate.benign_data.path={cal_b}",
        "calibrate.fa_n=6",
        "calibrate.user_scales=[0.5,1.0]",
        "calibrate.reinforce_scales=[0.0,1.0]",
        "calibrate.alphas=[1.0]",
        "calibrate.layers=[null,[0]]",
        f"calibrate.cache={root / 'cache'}",
    ]
    assert main(["calibrate", *calib, f"out={root / 'calibrated'}"]) == 0
    return {"root": root, "calib": calib, "eval": [eval_h, eval_b, eval_fa], "over": over}


def test_writes_a_merge_run_with_the_search_table_plot_and_cost(runs: dict[str, Any]) -> None:
    out = runs["root"] / "calibrated"
    assert is_complete(out) and (out / "calibration_pareto.png").is_file()
    diag = json.loads((out / "merge_diagnostics.json").read_text())
    table = diag["calibration"]["table"]
    assert len(table) == 1 + 2 * (1 + 2)  # the paper merge; c_R = 0 collapses; c_R = 1 x 2 layer sets
    assert sum(r["chosen"] for r in table) == 1 and any(r["pareto"] for r in table)
    paper = table[0]  # the paper's merge is always a candidate
    assert (paper["user_scale"], paper["reinforce_scale"], paper["alpha"]) == (0.5, 0.5, 0.1)
    chosen = next(r for r in table if r["chosen"])
    manifest = read_manifest(out)
    assert manifest["stage"] == "merge" and manifest["contains_buffer"] is False
    cal = manifest["calibration"]
    assert cal["chosen"]["user_scale"] == chosen["user_scale"] and set(cal["references"]) == {"base", "user", "paper"}
    assert cal["cost"]["user_train_wall_time_s"] > 0 and cal["cost"]["ratio_to_user_training"] is not None
    summary = diag["summary"]  # the merge itself was made with the chosen knobs
    assert summary["strengths"] == {"user": chosen["user_scale"], "reinforce": chosen["reinforce_scale"]}
    assert summary["reinforce_layers"] == chosen["layers"]


def test_reinforce_trains_on_the_lookalikes_beside_the_refusal_pairs(runs: dict[str, Any]) -> None:
    m = read_manifest(runs["root"] / "reinforce")
    assert m["data"]["lookalike"]["count"] == 3
    assert m["training"]["examples"] == m["data"]["refusal"]["count"] + m["data"]["benign"]["count"] + 3


def test_calibration_and_evaluation_ids_are_in_the_manifest_and_disjoint(runs: dict[str, Any]) -> None:
    data = read_manifest(runs["root"] / "calibrated")["calibration"]["data"]
    calib_ids = {i for d in data["calibration"].values() for i in d["ids"]}
    eval_ids = {i for d in data["evaluation"].values() for i in d["ids"]}
    assert set(data["calibration"]) == {"harmful", "over_refusal", "fa"}
    assert set(data["evaluation"]) == {"harmful", "over-refusal", "test-exact"}
    assert calib_ids and eval_ids and not calib_ids & eval_ids
    user_ids = set(read_manifest(runs["root"] / "user")["data"]["ids"])
    assert not set(data["calibration"]["fa"]["ids"]) & user_ids  # the FA slice is held out from the user's job


def test_a_calibration_set_overlapping_an_evaluation_set_is_refused(runs: dict[str, Any], capsys) -> None:
    eval_h = runs["eval"][0]
    out = runs["root"] / "leaky"
    argv = ["calibrate", *runs["calib"], f"calibrate.harmful_data.path={eval_h}", f"out={out}"]
    assert main(argv) == 2
    assert "shares" in capsys.readouterr().err
    assert not out.exists() and not Path(str(out) + ".partial").exists()


def test_a_rerun_reads_every_completion_from_the_cache(runs: dict[str, Any]) -> None:
    out = runs["root"] / "again"
    assert main(["calibrate", *runs["calib"], f"out={out}"]) == 0
    cal = read_manifest(out)["calibration"]
    assert cal["cost"]["completions_generated"] == 0
    first = read_manifest(runs["root"] / "calibrated")["calibration"]
    assert cal["chosen"] == first["chosen"]


def test_screening_scores_every_point_cheaply_and_only_the_best_on_the_full_sets(runs: dict[str, Any]) -> None:
    out = runs["root"] / "screened"
    argv = ["calibrate", *runs["calib"], "calibrate.screen_fraction=0.5", "calibrate.keep=2", f"out={out}"]
    assert main(argv) == 0
    table = json.loads((out / "merge_diagnostics.json").read_text())["calibration"]["table"]
    full = [r for r in table if r["stage"] == "full"]
    assert len(table) == 7 and len(full) == 2 and all("screen" in r for r in full)
    assert next(r for r in table if r["chosen"])["stage"] == "full"
    assert not any(r["pareto"] for r in table if r["stage"] == "screen")


def _defense_args(runs: dict[str, Any]) -> list[str]:
    """The calibrate options of the fixture without the paths of one run (user, reinforce, out)."""
    return [a for a in runs["calib"] if not a.startswith(("user=", "reinforce="))]


def test_bnr_calibrated_is_a_defense_of_the_sweep(runs: dict[str, Any], tiny_data: dict[str, Path]) -> None:
    root = runs["root"]
    sweep_out = root / "sweep"
    argv = [
        "sweep",
        *_defense_args(runs),
        *[a for a in runs["over"] if not a.startswith("out=")],
        f"user.buffer={root / 'buffer'}",
        f"merge.reinforce={root / 'reinforce'}",
        "sweep.defenses=[bnr-calibrated]",
        "sweep.providers=given",
        "sweep.p=[0.25]",
        "sweep.seeds=[1]",
        "sweep.n=[12]",
        "sweep.plots=false",
        f"sweep.out={sweep_out}",
    ]
    assert main(argv) == 0
    cell = sweep_out / "cells" / "bnr-calibrated-p0.25-n12-s1"
    runs_of_cell = read_cell(cell)
    assert read_manifest(runs_of_cell["user"])["trained_with_buffer"] is True
    deliverable = runs_of_cell["deliverable"]
    assert "calibration" in read_manifest(deliverable)  # finalize ran the calibration and wrote the merge
    assert path_from(read_manifest(cell / "eval")["target"]["path"], cell / "eval") == deliverable
    rows = [json.loads(x) for x in (sweep_out / "results.jsonl").read_text().splitlines()]
    assert [r["defense"] for r in rows] == ["bnr-calibrated"]


def test_the_held_out_slice_reads_a_user_run_written_by_an_older_bnr(runs: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    from bnr.defenses.calibrate import heldout_user_slice

    old = tmp_path / "old-user"
    shutil.copytree(runs["root"] / "user", old)
    current = heldout_user_slice(str(old), 6, 42)
    # a config.yaml with a key that has since moved (`toy.task`): the slice needs only user.benign_data
    (old / "config.yaml").write_text((old / "config.yaml").read_text() + "\ntask: sst2\n")
    assert [r.id for r in heldout_user_slice(str(old), 6, 42)] == [r.id for r in current]
    (old / "config.yaml").write_text("user: {}\n")
    with pytest.raises(BnrError, match=r"cannot read user\.benign_data"):
        heldout_user_slice(str(old), 6, 42)
