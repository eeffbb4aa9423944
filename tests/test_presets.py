"""Every shipped preset is a valid config whose registry names resolve, without loading any model or data."""

from __future__ import annotations

from pathlib import Path

import pytest

from bnr.config import Config, DataConfig, load_config, preset_names
from bnr.data.sources import SOURCES
from bnr.data.templates import TEMPLATES
from bnr.defenses import DEFENSES
from bnr.eval.protocols import PROTOCOLS
from bnr.merge import MERGE_METHODS


def _data_sections(c: Config) -> list[DataConfig]:
    return [
        c.buffer.data,
        c.reinforce.refusal_data,
        c.reinforce.benign_data,
        c.align.refusal_data,
        c.align.benign_data,
        c.user.benign_data,
        c.user.harmful_data,
    ]


@pytest.mark.parametrize("name", preset_names())
def test_preset_names_resolve(name: str) -> None:
    cfg = load_config(name)
    assert cfg.description, f"preset {name} has no description"
    TEMPLATES.get(cfg.template)
    DEFENSES.get(cfg.user.defense)
    MERGE_METHODS.get(cfg.merge.method)
    PROTOCOLS.get(cfg.eval.protocol)
    for data in _data_sections(cfg):
        SOURCES.get(data.source)


@pytest.mark.parametrize(
    ("name", "model", "alpha", "user_lr"),
    [
        ("paper", "meta-llama/Meta-Llama-3-8B-Instruct", 0.1, 1e-5),
        ("gemma2-9b", "google/gemma-2-9b-it", 1.0, 5e-6),
        ("qwen3-4b", "Qwen/Qwen3-4B-Instruct-2507", 0.0, 5e-5),
    ],
)
def test_paper_model_presets_carry_released_constants(name: str, model: str, alpha: float, user_lr: float) -> None:
    cfg = load_config(name)
    assert cfg.model.name_or_path == model
    assert cfg.merge.alpha == alpha and cfg.merge.scale == 0.5 and cfg.merge.tau == 0.01
    assert cfg.user.train.lr == user_lr
    assert (cfg.user.lora.r, cfg.user.lora.alpha) == (32, 64)
    assert cfg.buffer.train.batch_size * cfg.buffer.train.grad_accum == 8


def test_smollm2_sweep_preset_is_the_issue_grid() -> None:
    """The SmolLM2 comparison: every defense and bnr-calibrated at p = 0.1, sft, bnr and bnr-buffer-only at
    p = 0.5, bnr at scale 0.5 and 1, 3 seeds; the alignment-stage defenses at p = 0.1 last."""
    from bnr.orchestrate.grid import grid

    cfg = load_config("smollm2-sweep")
    cells = grid(cfg)
    seen = {(c.label, c.p) for c in cells}
    defenses = ["sft", "safeinstruct", "lisa", "safelora", "antidote", "bnr", "bnr-buffer-only", "bnr-reinforce-only"]
    assert {(d, 0.1) for d in defenses} <= seen
    assert {("sft", 0.5), ("bnr", 0.5), ("bnr merge.scale=1", 0.1), ("bnr merge.scale=1", 0.5)} <= seen
    assert ("bnr-buffer-only", 0.5) in seen
    for label, p in seen:
        assert sorted(c.seed for c in cells if (c.label, c.p) == (label, p)) == [30, 42, 50]
    aligned = ["vaccine", "booster", "repnoise", "t-vaccine"]
    assert {(d, 0.1) for d in aligned} <= seen
    assert len(cells) == len(seen) * 3 == 54
    # a partial run has the p = 0.1 table first, a whole seed at a time (42, 30, 50), issue 13's cells first
    core = ["sft", "bnr", "bnr-calibrated"]
    rest = [d for d in defenses if d not in core]
    assert [(c.label, c.seed) for c in cells[:27]] == [(d, s) for s in (42, 30, 50) for d in core + rest]
    assert all(c.p == 0.1 for c in cells[:27])
    assert [c.label for c in cells[-15:-12]] == ["bnr-buffer-only"] * 3  # the p = 0.5 diagnostic, then
    assert [(c.label, c.seed) for c in cells[-12:]] == [(d, s) for s in (42, 30, 50) for d in aligned]
    assert cfg.merge.scale == 0.5 and cfg.sweep.fa_benchmark == "sst2"
    assert cfg.eval.judges == ["keyword", "content"]
    assert cfg.model.unaligned == "builtin:smollm2"


@pytest.mark.shared_data
def test_smollm2_sweep_preset_evaluates_enough_prompts() -> None:
    """>= 200 harmful, >= 200 benign (the XSTest-style source among them), >= 300 SST-2 items; no model loaded."""
    from bnr.data.sources import shared_data_dir
    from bnr.eval.benchmarks import make_benchmark
    from bnr.eval.suite import benchmark_options

    if not (shared_data_dir() / "harmful_prompts_eval.jsonl").is_file():
        pytest.skip("../shared/data is absent")
    cfg = load_config("smollm2-sweep")
    protocol = PROTOCOLS.get(cfg.eval.protocol)
    loaded = {}
    for name in cfg.eval.benchmarks:
        opts = benchmark_options(name, protocol, cfg.eval)
        if "judges" in opts:
            opts["judges"] = ["keyword"]  # the prompt set does not depend on the judge
        loaded[name] = make_benchmark(name, **opts).load()
    assert len(loaded["harmful"]) >= 200 and len({r.source for r in loaded["harmful"]}) >= 10
    assert len(loaded["over-refusal"]) >= 200
    assert sum(r.source == "stl_I-PhysicalSafetySafe" for r in loaded["over-refusal"]) >= 50
    assert len(loaded["sst2"]) >= 300


@pytest.mark.shared_data
def test_smollm2_sweep_calibration_sets_are_disjoint_from_its_evaluation(tmp_path: Path) -> None:
    """bnr-calibrated's harmful and benign calibration prompts are the rest of the evaluation files; none is an
    evaluation prompt (the recipe's own check), and each set is full-sized. No model loaded."""
    from bnr.calibration import check_disjoint
    from bnr.data.sources import shared_data_dir
    from bnr.defenses.calibrate import (
        _write_sets,
        benchmark_roles,
        calibration_benchmarks,
        calibration_prompts,
        evaluation_records,
    )
    from bnr.eval.protocols import PROTOCOLS

    if not (shared_data_dir() / "harmful_prompts_eval.jsonl").exists():
        pytest.skip("../shared/data is absent")
    # the keyword judge only: the content judge's encoder is an optional install, and its scores are not under test
    cfg = load_config("smollm2-sweep", ["eval.judges=[keyword]"])
    calib = calibration_prompts(cfg)  # the FA slice needs a finished user run
    evaluation = evaluation_records(cfg, PROTOCOLS.get(cfg.eval.protocol))
    check_disjoint(calib, evaluation)
    assert len(calib["harmful"]) == len(calib["over_refusal"]) == 100
    # and the search scores every one of them (the evaluation's per-source limits do not cut them again)
    protocol = PROTOCOLS.get(cfg.eval.protocol)
    sets = {r: calib[r] for r in ("harmful", "over_refusal")}
    files = _write_sets(sets, {r: tmp_path / f"{r}.jsonl" for r in sets})
    roles = {r: n for r, n in benchmark_roles(cfg).items() if r in files}
    benches = calibration_benchmarks(cfg, protocol, roles, files)
    assert {role: len(b.load()) for role, b in benches.items()} == {"harmful": 100, "over_refusal": 100}
    assert len({r.source for r in calib["harmful"]}) >= 8  # drawn across the evaluation's harmful sources


@pytest.mark.parametrize(
    ("name", "defenses", "source"),
    [
        ("smollm2-lookalike", {"bnr", "bnr-calibrated"}, "shared"),
        ("toy-hard-lookalike", {"bnr", "bnr-calibrated"}, "toy"),
        ("toy-defenses-lookalike", {"bnr-calibrated"}, "toy"),
    ],
)
def test_lookalike_presets_pair_every_cell_with_a_lookalike_reinforcelora(
    name: str, defenses: set[str], source: str
) -> None:
    """The experiments that were shell scripts (a look-alike ReinforceLoRA beside the preset's, merged onto the same
    UserLoRAs) are grids: each seed's cell with the preset's ReinforceLoRA and one with the look-alike one, the
    user job identical (so one UserLoRA per seed), and a report."""
    from bnr.orchestrate.grid import cell_config, grid

    cfg = load_config(name)
    cells = grid(cfg)
    assert {c.defense for c in cells} == defenses and {c.seed for c in cells} == {42, 30, 50}
    configs = [cell_config(cfg, c) for c in cells]
    look = [c for c in configs if c.reinforce.lookalike_data is not None]
    assert len(look) * 2 == len(cells)
    assert all(c.reinforce.n_lookalike == 300 and c.reinforce.lookalike_data.source == source for c in look)
    assert len({(c.seed, str(c.user.train), c.user.p, c.user.n) for c in configs}) == 3  # one user job per seed
    assert cfg.sweep.report and cfg.sweep.out.startswith("runs/") and "lookalike" in cfg.sweep.out


def test_a_report_is_replaced_whole_by_an_inheriting_preset() -> None:
    """`sweep.report` is one table's columns: a child preset's replaces its parent's (the attack and fidelity
    sweeps inherit smollm2-sweep but not its comparison report)."""
    assert "SST-2 refused" in load_config("smollm2-sweep").sweep.report
    assert load_config("smollm2-attacks").sweep.report == {} and load_config("smollm2-fidelity").sweep.report == {}
    assert load_config("smollm2-sweep", ["sweep.report={HS: hs}"]).sweep.report == {"HS": "hs"}
