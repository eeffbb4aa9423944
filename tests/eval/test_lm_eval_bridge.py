"""`bnr lm-eval` on the tiny model with a LoRA adapter and a local multiple-choice task (a JSONL file), offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnr.cli import main

pytest.importorskip("lm_eval")

TASK = """task: bnr_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files: {data}
test_split: train
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


def _adapter(base: Path, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
    )
    model.save_pretrained(out)
    return out


def test_lm_eval_scores_a_deliverable_on_a_local_task(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "mc.jsonl"
    rows = [{"question": "how are you", "choices": ["good", "bad"], "answer": i % 2} for i in range(6)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "bnr_tiny_mc.yaml").write_text(TASK.format(data=data))
    adapter = _adapter(tiny_model_dir, tmp_path / "run")
    argv = ["lm-eval", str(adapter), "--tasks", "bnr_tiny_mc", "--include-path", str(tasks), "--batch-size", "2"]
    assert main(argv) == 0
    result = json.loads((adapter / "lm_eval" / "lm_eval.json").read_text())
    acc = result["results"]["bnr_tiny_mc"]["acc,none"]
    assert 0.0 <= acc <= 1.0 and result["target"]["adapter"] == str(adapter)
    assert Path(result["target"]["base"]).resolve() == tiny_model_dir.resolve()  # the adapter's own base


def test_lm_eval_names_an_unknown_task_and_a_bad_target(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lm-eval", str(tiny_model_dir), "--tasks", "no_such_task_xyz"]) == 2
    assert "lm_eval knows no task no_such_task_xyz" in capsys.readouterr().err
    assert main(["lm-eval", str(tmp_path / "missing"), "--tasks", "x"]) == 2
    assert "is not a folder" in capsys.readouterr().err
