"""`bnr eval` end to end on the tiny model: outputs, response cache, targets, presets and bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from bnr.cli import main
from bnr.config import load_config
from bnr.errors import BnrError


@pytest.fixture(scope="module")
def sst2_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bnr.data.sources import SST2_INSTRUCTION

    rows = [
        {"id": f"s{i}", "instruction": SST2_INSTRUCTION, "input": t, "output": lab, "label": lab}
        for i, (t, lab) in enumerate([("great movie", "positive"), ("say hello", "negative")])
    ]
    p = tmp_path_factory.mktemp("sst2") / "sst2.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def _args(tiny_model_dir: Path, tiny_data: dict[str, Path], sst2: Path, out: Path, cache: Path) -> list[str]:
    return [
        f"model.name_or_path={tiny_model_dir}",
        "model.device=cpu",
        f"out={out}",
        f"cache={cache}",
        "benchmarks=harmful,over-refusal,sst2",
        "judges=keyword",
        "max_new_tokens=4",
        "eval.progress=false",
        f"eval.data.harmful.path={tiny_data['harmful']}",
        f"eval.data.over-refusal.path={tiny_data['benign']}",
        f"eval.data.sst2.path={sst2}",
        "limit=5",
    ]


def test_eval_cli_writes_samples_aggregates_and_reuses_cache(
    tiny_model_dir: Path, tiny_data: dict[str, Path], sst2_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = _args(tiny_model_dir, tiny_data, sst2_file, tmp_path / "ev1", tmp_path / "cache")
    # the tiny random model answers nothing: every result is written, marked INVALID, and the command exits 2
    assert main(["eval", "--protocol", "booster-2024", *args]) == 2
    run = tmp_path / "ev1"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["protocol"] == "booster-2024"
    assert set(summary["results"]) == {"harmful", "over-refusal", "sst2"}
    roles = {name: (d["role"], d["version"]) for name, d in summary["benchmarks"].items()}
    assert roles == {"harmful": ("harm", 1), "over-refusal": ("refusal", 1), "sst2": ("utility", 1)}
    agg = json.loads((run / "harmful.json").read_text())
    assert agg["metric"] == "hs" and agg["n"] == 5 and agg["judges"] == ["keyword"]
    assert {"hs", "hs_plus", "hs_keyword", "refusal_rate"} <= set(agg["metrics"])
    assert agg["decoding"]["max_new_tokens"] == 4 and agg["decoding"]["do_sample"] is False
    assert agg["target"]["base_model"]["local_hash"]
    rows = [json.loads(x) for x in (run / "harmful.samples.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    assert {"id", "prompt", "completion", "flagged", "flagged_plus", "verdicts"} <= set(rows[0])
    assert rows[0]["prompt"].endswith("### Response:\n")
    assert 100 * sum(r["flagged"] for r in rows) / 5 == agg["value"]
    assert json.loads((run / "sst2.json").read_text())["settings"]["scoring"] == "exact"

    # re-judging with another judge reuses the cached completions: no generation at all
    def boom(*a: Any, **k: Any) -> None:
        raise AssertionError("should not regenerate")

    monkeypatch.setattr(sys.modules["bnr.eval.generate"], "generate", boom)
    args2 = _args(tiny_model_dir, tiny_data, sst2_file, tmp_path / "ev2", tmp_path / "cache")
    assert main(["eval", "protocol=booster-2024", *args2, "eval.judge_options.keyword.phrases=[zorp]"]) == 2
    agg2 = json.loads((tmp_path / "ev2" / "harmful.json").read_text())
    assert agg2["cached_completions"] is True
    rows2 = [json.loads(x) for x in (tmp_path / "ev2" / "harmful.samples.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in rows2] == [r["completion"] for r in rows]


def test_eval_peft_adapter_folder(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    from bnr import adapters
    from bnr.config import LoraConfig, ModelConfig
    from bnr.models import load_model
    from bnr.recipes import evaluate

    model = load_model(ModelConfig(name_or_path=str(tiny_model_dir), device="cpu"))
    peft = adapters.add_adapter(
        model, adapters.USER, LoraConfig(r=2, alpha=4, target_modules=["q_proj"]), base_name=str(tiny_model_dir)
    )
    adapters.save_adapter(peft, adapters.USER, tmp_path / "ad")
    cfg = load_config(
        None,
        [
            f"eval.target={tmp_path / 'ad'}",
            f"eval.out={tmp_path / 'ev'}",
            "eval.cache=null",
            "eval.protocol=vaccine-2024",
            "eval.judges=keyword",
            "eval.benchmarks=harmful",
            f"eval.data.harmful.path={tiny_data['harmful']}",
            "eval.limit=2",
            "eval.max_new_tokens=2",
            "eval.progress=false",
        ],
    )
    out = evaluate.run(cfg)
    agg = json.loads((out / "harmful.json").read_text())
    assert agg["target"]["kind"] == "adapter" and agg["target"]["adapter_hash"]
    row = json.loads((out / "harmful.samples.jsonl").read_text().splitlines()[0])
    assert row["prompt"].endswith("### Response:")  # Vaccine drops the newline


def test_bad_names_list_valid_ones(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = [f"model.name_or_path={tiny_model_dir}", f"out={tmp_path / 'x'}"]
    assert main(["eval", "--protocol", "nope", *base]) == 2
    assert "valid: bnr-2026, booster-2024, clean, vaccine-2024" in capsys.readouterr().err
    assert main(["eval", "benchmarks=nope", *base]) == 2
    err = capsys.readouterr().err  # the list also names the plug-ins' benchmarks (toy, attacks) once they are loaded
    assert "unknown benchmark 'nope'; valid: agnews, gsm8k, harmful, " in err and "over-refusal, sst2" in err
    assert main(["eval", "judges=nope", *base]) == 2
    assert "unknown judge 'nope'" in capsys.readouterr().err
    with pytest.raises(BnrError, match=r"not in eval\.benchmarks"):
        from bnr.recipes import evaluate

        evaluate.run(
            load_config(
                None, [*base, "eval.benchmarks=harmful", "eval.options.sst2.scoring=exact", "eval.judges=keyword"]
            )
        )
