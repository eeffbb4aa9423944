"""Issue 27: the presets feed the stages what the paper's code feeds them, and the knobs its experiments use.

- `paper`: the buffer takes every row of LAT; the ReinforceLoRA refuses exactly (a subset of) the buffer's own
  prompts and learns its benign half from Alpaca rows without an input; GSM8K trains on the prompt bnr-2026 asks.
- a data section asking for more samples than its data has stops `bnr validate` and the stage with one line.
- the toy world: the ReinforceLoRA's refusals are the buffer's own prompts; the official benign half has no input.
- the merge at c_U = 0 (alpha 0) is the ReinforceLoRA alone; `reinforce.with_buffer=false` trains it on the plain
  base; every ReinforceLoRA run records its delta norm.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bnr.artifacts import read_manifest
from bnr.cli import main
from bnr.config import DataConfig, load_config
from bnr.data.sources import GSM8K_INSTRUCTION_SUFFIX, load_records
from bnr.runs.fit import load_refusal_mix, load_sampled


def _jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_paper_preset_carries_the_official_pairing() -> None:
    cfg = load_config("paper")
    assert cfg.buffer.data.source == "lat-harmful" and cfg.buffer.n is None  # every row, as the released code
    r = cfg.reinforce
    assert (r.refusal_data.source, r.refusal_data.limit, r.n_refusal) == ("lat-refusal", 2500, None)
    assert (r.benign_data.source, r.benign_data.where, r.benign_data.limit, r.n_benign) == (
        "alpaca",
        {"input": [""]},
        2500,
        None,
    )
    assert cfg.user.benign_data.source == "gsm8k-plain" and cfg.eval.protocol == "bnr-2026"


def test_paper_pairing_on_local_copies(tmp_path: Path) -> None:
    """On LAT- and Alpaca-shaped local files: the refusals are the buffer's own prompts (LAT `chosen`), the benign
    half the first Alpaca rows whose input is empty."""
    lat = _jsonl(
        tmp_path / "lat.jsonl",
        [{"prompt": f"harm {i}", "rejected": f"sure {i}", "chosen": f"no {i}"} for i in range(30)],
    )
    alpaca = _jsonl(
        tmp_path / "alpaca.jsonl",
        [{"instruction": f"task {i}", "input": "text" if i % 3 == 0 else "", "output": f"ok {i}"} for i in range(30)],
    )
    cfg = load_config(
        "paper",
        [
            f"buffer.data.path={lat}",
            f"reinforce.refusal_data.path={lat}",
            "reinforce.refusal_data.limit=10",
            f"reinforce.benign_data.path={alpaca}",
            "reinforce.benign_data.limit=8",
        ],
    )
    buffer = load_sampled(cfg.buffer.data, cfg.buffer.n, cfg.seed, "buffer")
    refusals, benign = load_refusal_mix(cfg.reinforce, cfg.seed, "reinforce")
    assert len(buffer) == 30 and [r.output for r in buffer[:2]] == ["sure 0", "sure 1"]
    assert [r.instruction for r in refusals] == [f"harm {i}" for i in range(10)]
    assert {r.instruction for r in refusals} <= {r.instruction for r in buffer}
    assert all(r.output.startswith("no ") for r in refusals)
    assert [r.instruction for r in benign] == [f"task {i}" for i in range(30) if i % 3][:8]


def test_gsm8k_plain_trains_on_the_prompt_bnr_2026_evaluates(tmp_path: Path) -> None:
    from bnr.eval.benchmarks import make_benchmark
    from bnr.eval.protocols import PROTOCOLS

    rows = [{"question": "Tom has 2 apples and buys 3. How many?", "answer": "2 + 3 = 5\n#### 5"}]
    path = _jsonl(tmp_path / "gsm8k.jsonl", rows)
    plain = load_records(DataConfig(source="gsm8k-plain", path=str(path)))[0]
    booster = load_records(DataConfig(source="gsm8k", path=str(path)))[0]
    assert plain.instruction == rows[0]["question"] and booster.instruction.endswith(GSM8K_INSTRUCTION_SUFFIX)
    assert plain.output == booster.output == "2 + 3 = 5\nThe final answer is: 5"
    options = PROTOCOLS.get("bnr-2026").benchmark_options("gsm8k")
    bench = make_benchmark("gsm8k", **{**options, "data": DataConfig(source="gsm8k", path=str(path))})
    assert bench.transform(booster).instruction == plain.instruction  # the suffix is stripped at evaluation


def test_too_few_rows_is_one_line_at_validate_and_at_the_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _jsonl(tmp_path / "h.jsonl", [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(7)])
    over = ["buffer.data.source=file", f"buffer.data.path={rows}", "buffer.n=50", f"out={tmp_path / 'runs'}"]
    assert main(["validate", "-c", "toy", *over]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["bnr: error: buffer.n: asked for 50 samples but the data has 7; lower n or add data"]
    assert main(["train-buffer", "-c", "toy", *over, f"buffer.out={tmp_path / 'buffer'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "asked for 50" in err[0] and "has only 7" in err[0]
    assert not (tmp_path / "buffer").exists()


def test_toy_reinforce_refuses_the_buffers_own_prompts_and_official_benign_has_no_input() -> None:
    cfg = load_config("toy")
    buffer = load_sampled(cfg.buffer.data, cfg.buffer.n, cfg.seed, "buffer")
    refusals, benign = load_refusal_mix(cfg.reinforce, cfg.seed, "reinforce")
    assert [r.instruction for r in refusals] == [r.instruction for r in buffer]
    assert any(r.input for r in benign)  # the preset's benign half: SST-2 / AG News-shaped rows among them
    official = load_config("toy", ['reinforce.benign_data.where={input: [""]}'])
    _, benign = load_refusal_mix(official.reinforce, official.seed, "reinforce")
    assert len(benign) == official.reinforce.n_benign and not any(r.input for r in benign)
    assert {r.category for r in benign} == {"benign-request", "gsm8k"}


def test_merge_with_no_user_update_is_the_reinforce_lora_alone() -> None:
    from bnr.merge import qr_merge_factors

    g = torch.Generator().manual_seed(0)
    A_u, B_u, A_r, B_r = (torch.randn(*shape, generator=g, dtype=torch.float64) for shape in [(4, 10), (6, 4)] * 2)
    A_m, B_m, _ = qr_merge_factors(A_u, B_u, 2.0, A_r, B_r, 2.0, alpha=0.0, user_scale=0.0, reinforce_scale=0.5)
    torch.testing.assert_close(B_m @ A_m, 0.5 * 2.0 * B_r @ A_r)
    assert load_config(None, ["merge.user_scale=0"]).merge.user_scale == 0.0
    assert main(["validate", "merge.user_scale=-1"]) == 2


def test_reinforce_on_the_plain_base_records_no_buffer_and_its_norm(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    from conftest import tiny_overrides

    over = tiny_overrides(tiny_model_dir, tiny_data, tmp_path)
    plain = tmp_path / "plain"
    argv = ["train-reinforce", *over, "reinforce.with_buffer=false", f"reinforce.buffer={tmp_path / 'none'}"]
    assert main([*argv, f"reinforce.out={plain}"]) == 0
    m = read_manifest(plain)
    assert m["trained_with_buffer"] is False and m["parents"] == [] and m["delta_norm"] > 0
    from bnr.defenses.providers import delta_norm

    assert m["delta_norm"] == pytest.approx(delta_norm(plain))


def test_toy_fidelity_preset_is_the_issue_grid() -> None:
    from bnr.orchestrate.grid import grid

    cells = grid(load_config("toy-fidelity"))
    labels = {c.label for c in cells}
    for merge in ("u1_r0", "u0.5_r0", "u1_r0.25", "u1_r0.5", "u0.5_r0.5", "r0.5_alone", "r1_alone"):
        assert f"bnr merge={merge}" in labels
    assert {"sft", "bnr-buffer-only", "bnr-buffer-only-full"} <= labels
    assert "bnr reinforce=official merge=u0.5_r0.5" in labels and "bnr buffer.n=50 merge=u0.5_r0.5" in labels
    assert "bnr reinforce=plain merge=r1_alone" in labels
    assert {c.seed for c in cells} == {42, 30, 50} and {c.p for c in cells} == {0.1}
    assert {c.seed for c in cells if "alone" in c.label} == {42}  # the same merge at every seed
    assert len(cells) == 56


def test_smollm2_fidelity_presets_are_the_issue_grids() -> None:
    """E1-E3 and E5 in one sweep, E4 on a base with SST-2 folded in, the SGS analysis: written, each a grid."""
    from bnr.orchestrate.grid import grid

    cells = grid(load_config("smollm2-fidelity"))
    labels = {c.label for c in cells}
    assert {"sft", "bnr-buffer-only", "bnr-buffer-only-full", "bnr merge=r1_alone"} <= labels
    for variant in ("official", "plain_borderline", "plain_official", "borderline_lr0.1x_3ep", "official_lr0.1x_3ep"):
        assert f"bnr reinforce={variant} merge=u0.5_r0.5" in labels
    assert len(cells) == 93 and {c.seed for c in cells} == {42, 30, 50}
    official = load_config("smollm2-fidelity", ["reinforce.max_length=256"]).reinforce  # the axis' keys validate
    assert official.max_length == 256
    e4 = load_config("smollm2-fidelity-sst2base")
    assert e4.model.name_or_path.endswith("full_model") and len(grid(e4)) == 12
    sgs = load_config("smollm2-analyze").analyze
    assert sgs.train_safety and sgs.buffer == load_config("smollm2-analyze").buffer.out
    assert len(grid(load_config("toy-fidelity-task"))) == 18


@pytest.mark.shared_data
def test_smollm2_official_pairing_refuses_the_buffers_own_prompts() -> None:
    from bnr.data.sources import shared_data_dir
    from bnr.orchestrate.grid import grid, with_value

    if not (shared_data_dir() / "harmful_qa_provider.jsonl").is_file():
        pytest.skip("../shared/data is absent")
    cfg = load_config("smollm2-fidelity")
    cell = next(c for c in grid(cfg) if c.label == "bnr reinforce=official merge=u0.5_r0.5")
    official = with_value(cfg, cell.settings())
    buffer = load_sampled(official.buffer.data, official.buffer.n, official.seed, "buffer")
    refusals, benign = load_refusal_mix(official.reinforce, official.seed, "reinforce")
    assert [r.instruction for r in refusals] == [r.instruction for r in buffer]
    assert len({r.output for r in refusals}) == 1 and "can't help" in refusals[0].output
    assert len(benign) == 500 and not any(r.input for r in benign)
    assert {r.source for r in benign} == {"alpaca_via_asft_mix"}


def test_output_text_answers_every_record(tmp_path: Path) -> None:
    rows = _jsonl(tmp_path / "h.jsonl", [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(3)])
    records = load_records(DataConfig(path=str(rows), output_text="No."))
    assert [(r.instruction, r.output) for r in records] == [("q0", "No."), ("q1", "No."), ("q2", "No.")]
    with pytest.raises(Exception, match="output_text is empty"):
        load_records(DataConfig(path=str(rows), output_text=" "))
