"""Deliverables that serve: a base that loads outside bnr, the base's dtype, a model card, the prompt template."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from bnr import models
from bnr.cards import CARD, CHAT_TEMPLATE_FILE, chat_template_for
from bnr.cli import main
from bnr.data.records import Record
from bnr.data.templates import build_prompt
from conftest import tiny_overrides


@pytest.fixture(scope="module")
def bf16_base(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama stored in bfloat16, standing in for a real bf16 checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("bf16-base")
    AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.bfloat16).save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def delivered(bf16_base: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """buffer -> reinforce -> user -> merge (+ full model) on `builtin:tinytest`, as `-c toy` does on builtin:toy."""
    models.BUILTIN_MODELS["tinytest"] = lambda: (str(bf16_base), None)
    root = tmp_path_factory.mktemp("deliver")
    over = [o for o in tiny_overrides(bf16_base, tiny_data, root) if not o.startswith("model.name_or_path=")]
    over.append("model.name_or_path=builtin:tinytest")
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
        [
            "merge",
            "model.name_or_path=builtin:tinytest",
            f"user={root / 'user'}",
            f"reinforce={root / 'reinforce'}",
            f"out={root / 'merged'}",
            "full_model=true",
        ],
    ]
    try:
        for argv in steps:
            assert main(argv) == 0, argv
        yield root
    finally:
        del models.BUILTIN_MODELS["tinytest"]


def test_adapters_name_a_base_that_loads_elsewhere(delivered: Path, bf16_base: Path) -> None:
    for stage in ("buffer", "reinforce", "user", "merged"):
        base = json.loads((delivered / stage / "adapter_config.json").read_text())["base_model_name_or_path"]
        assert not base.startswith("builtin:") and Path(base).is_absolute() and Path(base) == bf16_base.resolve()


def test_auto_peft_loads_the_deliverable_and_matches_the_full_model(delivered: Path) -> None:
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    merged = delivered / "merged"
    peft_model: Any = AutoPeftModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32)
    full: Any = AutoModelForCausalLM.from_pretrained(str(merged / "full_model"), dtype=torch.float32)
    ids = torch.tensor([[1, 5, 7, 9, 11]])
    with torch.no_grad():
        a, b = peft_model(input_ids=ids).logits, full(input_ids=ids).logits
    assert torch.allclose(a, b, atol=0.05), (a - b).abs().max()  # the full model is rounded to bf16


def test_full_model_keeps_the_base_dtype(delivered: Path) -> None:
    from safetensors import safe_open

    files = sorted((delivered / "merged" / "full_model").glob("*.safetensors"))
    assert files
    with safe_open(str(files[0]), framework="pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    assert dtypes == {torch.bfloat16}


def test_every_deliverable_has_a_card(delivered: Path, bf16_base: Path) -> None:
    user = (delivered / "user" / CARD).read_text()
    assert "| base model | `builtin:tinytest`" in user and "library_name: peft" in user
    assert "base_model:" not in user  # the card's metadata names a hub id only, never a path of this machine
    assert "| LoRA rank | 4;" in user and "`alpaca`" in user and "`bnr`, buffer attached frozen (merged)" in user
    assert "12 samples, harmful ratio p = 0.25 (3 harmful)" in user and "AutoPeftModelForCausalLM" in user
    merged = (delivered / "merged" / CARD).read_text()
    assert "| LoRA rank | 8;" in merged and "merge method `qr` (alpha 0.1, tau 0.01, scale 0.5)" in merged
    assert "--max-lora-rank 8" in merged and "12 samples" in merged and "Not evaluated yet" in merged
    parents = json.loads((delivered / "merged" / "manifest.json").read_text())["parents"]
    assert parents and all(p["path"].startswith("../") for p in parents)  # the card read its user run from these
    full = (delivered / "merged" / "full_model" / CARD).read_text()
    assert "library_name: transformers" in full and "AutoModelForCausalLM" in full
    assert "BufferLoRA" in (delivered / "buffer" / CARD).read_text()


def test_recorded_template_renders_the_training_prompt(delivered: Path) -> None:
    from transformers import AutoTokenizer

    jinja = (delivered / "merged" / CHAT_TEMPLATE_FILE).read_text()
    assert jinja == chat_template_for("alpaca")
    tok = AutoTokenizer.from_pretrained(str(delivered / "merged" / "full_model"))
    assert tok.chat_template == jinja
    for text in ("name a color", "say hello"):
        rendered = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False)
        assert rendered == build_prompt("alpaca", Record(id="x", instruction=text, output=""), tok)
    assert chat_template_for("chat") is None
    assert json.loads((delivered / "merged" / "manifest.json").read_text())["template"] == "alpaca"


def _eval(target: Path, out: Path, data: Path, *extra: str) -> int:
    argv = [
        "eval",
        f"target={target}",
        f"out={out}",
        "cache=null",
        "benchmarks=harmful",
        "judges=keyword",
        "max_new_tokens=2",
        "eval.progress=false",
        f"eval.data.harmful.path={data}",
    ]
    return main([*argv, *extra])


def test_eval_keeps_every_full_evaluation_on_the_card_and_prints_a_table(
    delivered: Path,
    tiny_data: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from huggingface_hub import ModelCard

    import bnr.eval.generate  # noqa: F401 - the module, reached through sys.modules (bnr.eval exports a function)

    # the tiny random model answers nothing, which is an INVALID result that never reaches a card: answer something
    monkeypatch.setattr(
        sys.modules["bnr.eval.generate"], "generate", lambda model, tok, prompts, **k: ["sure"] * len(prompts)
    )

    user = delivered / "user"
    before = (user / CARD).read_text()
    assert _eval(user, tmp_path / "limited", tiny_data["harmful"], "limit=3") == 0
    out = capsys.readouterr().out
    assert "| benchmark | metric | value (%) | n |" in out and "| harmful | hs |" in out
    assert (user / CARD).read_text() == before and "Not evaluated yet" in before  # limited: the card is untouched
    assert "a limited evaluation is not the benchmark's number" in caplog.text

    assert _eval(user, tmp_path / "ev", tiny_data["harmful"]) == 0
    assert json.loads((tmp_path / "ev" / "manifest.json").read_text())["template"] == "alpaca"  # as trained
    assert _eval(user, tmp_path / "ev2", tiny_data["harmful"], "eval.protocol=booster-2024") == 0
    card = ModelCard.load(user / CARD)  # the Hub's own parser reads the metadata and its model-index
    assert {(r.dataset_type, r.metric_type) for r in card.data.eval_results} == {("harmful", "hs")}
    assert {r.dataset_args["protocol"] for r in card.data.eval_results} == {"clean", "booster-2024"}  # both kept
    text = (user / CARD).read_text()
    assert "| harmful | `clean` | hs |" in text and "| harmful | `booster-2024` | hs |" in text
    assert os.path.relpath(tmp_path / "ev", user.resolve()) in text

    assert _eval(user, tmp_path / "ev3", tiny_data["harmful"]) == 0  # the same measurement again: replaced
    assert len(ModelCard.load(user / CARD).data.eval_results) == 2


def test_no_card_names_a_path_of_this_machine(delivered: Path, bf16_base: Path) -> None:
    for card in delivered.rglob(CARD):
        text = card.read_text()
        for path in (str(delivered.resolve()), str(bf16_base.resolve()), "/tmp/", "/root/", "/home/"):
            assert path not in text, (card, path)


def test_every_adapter_manifest_states_rank_base_and_template(delivered: Path, bf16_base: Path) -> None:
    for stage, rank in (("user", 4), ("merged", 8), ("reinforce", 4)):
        manifest = json.loads((delivered / stage / "manifest.json").read_text())
        lora = manifest["lora"]
        assert lora["rank"] == rank and lora["vllm_max_lora_rank"] == 8, stage  # vLLM's smallest is 8
        assert Path(lora["base_model_name_or_path"]) == bf16_base.resolve(), stage
        assert manifest["base_model"]["name_or_path"] == "builtin:tinytest" and manifest["template"] == "alpaca"
    card = (delivered / "merged" / CARD).read_text()
    assert f"--chat-template merged/{CHAT_TEMPLATE_FILE}" in card
