"""The tiny end-to-end pipeline: train-buffer -> train-reinforce -> finetune -> merge -> plain peft generate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bnr.artifacts import is_complete, read_manifest
from bnr.cli import main
from conftest import tiny_overrides


@pytest.fixture(scope="module")
def pipeline_run(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipe")
    over = tiny_overrides(tiny_model_dir, tiny_data, root)
    steps = [
        ["train-buffer", *over, f"buffer.out={root / 'buffer'}"],
        ["train-reinforce", *over, f"reinforce.buffer={root / 'buffer'}", f"reinforce.out={root / 'reinforce'}"],
        [
            "finetune",
            *over,
            f"user.buffer={root / 'buffer'}",
            f"merge.reinforce={root / 'reinforce'}",
            f"user.out={root / 'user'}",
        ],
        ["merge", f"user={root / 'user'}", f"reinforce={root / 'reinforce'}", f"out={root / 'merged'}"],
    ]
    for argv in steps:
        assert main(argv) == 0, argv
    return root


def test_each_stage_writes_a_complete_self_describing_run(pipeline_run: Path) -> None:
    for stage in ("buffer", "reinforce", "user", "merged"):
        run = pipeline_run / stage
        assert is_complete(run) and not Path(str(run) + ".partial").exists()
        assert (run / "adapter_config.json").is_file() and (run / "adapter_model.safetensors").is_file()
        m = read_manifest(run)
        assert m["versions"]["torch"] and m["config_hash"]
        assert m["key"] and m["key_inputs"] and m["content_hash"]  # every command records its stage key
    user = read_manifest(pipeline_run / "user")
    assert user["data"]["n_harmful"] == 3 and len(user["data"]["ids"]) == 12
    assert user["parents"][0]["role"] == "buffer" and user["trained_with_buffer"] is True
    assert user["parents"][0]["content_hash"] == read_manifest(pipeline_run / "buffer")["content_hash"]
    assert read_manifest(pipeline_run / "buffer")["contains_buffer"] is True
    assert json.loads((pipeline_run / "merged" / "merge_diagnostics.json").read_text())["summary"]["method"] == "qr"
    assert (pipeline_run / "user" / "metrics.jsonl").read_text().count("\n") >= 1


def test_merged_adapter_loads_with_plain_peft_and_generates(pipeline_run: Path, tiny_model_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = PeftModel.from_pretrained(base, str(pipeline_run / "merged"))
    cfg = json.loads((pipeline_run / "merged" / "adapter_config.json").read_text())
    assert max([cfg["r"], *cfg.get("rank_pattern", {}).values()]) == 8  # r_U + r_R = 4 + 4
    ids = tok("### Instruction:\nsay hello\n\n### Response:\n", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_the_buffer_never_leaks(pipeline_run: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    # merge refuses the buffer in either role, and writes nothing
    for role in ("user", "reinforce"):
        other = "reinforce" if role == "user" else "user"
        argv = [
            "merge",
            f"{role}={pipeline_run / 'buffer'}",
            f"{other}={pipeline_run / other}",
            f"out={tmp_path / 'x'}",
        ]
        assert main(argv) == 2
        assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()
    # the merged adapter is exactly [A_U; A_R]: no buffer factor inside
    merged = load_file(str(pipeline_run / "merged" / "adapter_model.safetensors"))
    user = load_file(str(pipeline_run / "user" / "adapter_model.safetensors"))
    buffer = load_file(str(pipeline_run / "buffer" / "adapter_model.safetensors"))
    reinforce = load_file(str(pipeline_run / "reinforce" / "adapter_model.safetensors"))
    for key, a_m in merged.items():
        if "lora_A" not in key:
            continue
        torch.testing.assert_close(a_m, torch.cat([user[key], reinforce[key]]))
        assert not any(torch.equal(a_m[i], buffer[key][j]) for i in range(a_m.shape[0]) for j in range(4))
    for stage in ("user", "reinforce", "merged"):
        assert read_manifest(pipeline_run / stage)["contains_buffer"] is False


def test_full_model_export_equals_adapter(pipeline_run: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "full"
    argv = [
        "merge",
        f"user={pipeline_run / 'user'}",
        f"reinforce={pipeline_run / 'reinforce'}",
        f"out={out}",
        "full_model=true",
        f"model.name_or_path={tiny_model_dir}",
    ]
    assert main(argv) == 0
    ids = torch.tensor([[4, 5, 6, 7, 8]])
    full = AutoModelForCausalLM.from_pretrained(str(out / "full_model"))
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(out))
    with torch.no_grad():
        torch.testing.assert_close(full(ids).logits, adapted(ids).logits, atol=1e-4, rtol=1e-4)


def test_pipeline_command_reuses_complete_stages(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    over = tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "p", **{"user.buffer_mode": "separate"})
    assert main(["pipeline", *over]) == 0
    stamp = read_manifest(tmp_path / "p" / "buffer")["created"]
    assert is_complete(tmp_path / "p" / "final")
    assert main(["pipeline", *over]) == 0
    assert read_manifest(tmp_path / "p" / "buffer")["created"] == stamp
    assert read_manifest(tmp_path / "p" / "user")["buffer_mode"] == "separate"


def test_merged_run_is_prompted_like_its_user_run(pipeline_run: Path, tmp_path: Path) -> None:
    argv = [
        "merge",
        f"user={pipeline_run / 'user'}",
        f"reinforce={pipeline_run / 'reinforce'}",
        f"out={tmp_path / 'm'}",
        "template=plain",
    ]
    assert main(argv) == 0
    assert read_manifest(tmp_path / "m")["template"] == read_manifest(pipeline_run / "user")["template"] == "alpaca"
