"""`eval.backend=vllm` on the CPU: selection, the error without vLLM, and the plumbing (a stand-in engine)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bnr.cli import main
from bnr.config import load_config
from bnr.errors import BnrError
from bnr.eval.backends import require_backend


@pytest.fixture()
def adapter_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    from bnr import adapters
    from bnr.config import LoraConfig, ModelConfig
    from bnr.models import load_model

    model = load_model(ModelConfig(name_or_path=str(tiny_model_dir), device="cpu"))
    peft = adapters.add_adapter(
        model, adapters.USER, LoraConfig(r=12, alpha=24, target_modules=["q_proj"]), base_name=str(tiny_model_dir)
    )
    adapters.save_adapter(peft, adapters.USER, tmp_path / "ad")
    return tmp_path / "ad"


def _eval_args(target: Path, tiny_data: dict[str, Path], out: Path) -> list[str]:
    return [
        f"eval.target={target}",
        f"eval.out={out}",
        f"eval.cache={out.parent / 'cache'}",
        "eval.protocol=clean",
        "eval.judges=keyword",
        "eval.benchmarks=harmful",
        f"eval.data.harmful.path={tiny_data['harmful']}",
        "eval.limit=3",
        "eval.max_new_tokens=4",
        "eval.progress=false",
        "eval.backend=vllm",
    ]


def test_the_default_backend_is_transformers() -> None:
    assert load_config(None).eval.backend == "hf"
    require_backend("hf")  # needs nothing


def test_missing_vllm_is_one_line_and_writes_nothing(
    adapter_dir: Path, tiny_data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    assert main(["eval", *_eval_args(adapter_dir, tiny_data, tmp_path / "ev")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[-1]] and "eval.backend=vllm needs vLLM" in err[-1] and "eval.backend=hf" in err[-1]
    assert not (tmp_path / "ev").exists() and not (tmp_path / "ev.partial").exists()


def test_a_bad_backend_names_the_choices() -> None:
    with pytest.raises(BnrError, match=r"eval\.backend"):
        load_config(None, ["eval.backend=tgi"])


class FakeEngine:
    """Stands in for `vllm.LLM`: records how it was built and what it was asked; answers a refusal."""

    made: ClassVar[list[dict[str, Any]]] = []
    asked: ClassVar[list[tuple[list[Any], Any, Any]]] = []

    def __init__(self, **kwargs: Any) -> None:
        FakeEngine.made.append(kwargs)

    def generate(self, prompts: list[Any], params: Any, lora_request: Any = None, use_tqdm: bool = True) -> list[Any]:
        FakeEngine.asked.append((prompts, params, lora_request))
        out = types.SimpleNamespace(text="I cannot help with that. STOP and more")
        return [types.SimpleNamespace(outputs=[out]) for _ in prompts]


def _fake_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    vllm = types.ModuleType("vllm")
    vllm.LLM = FakeEngine  # type: ignore[attr-defined]
    vllm.SamplingParams = lambda **kw: kw  # type: ignore[attr-defined]
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda name, i, path: {"name": name, "id": i, "path": path}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.lora", types.ModuleType("vllm.lora"))
    monkeypatch.setitem(sys.modules, "vllm.lora.request", request)
    FakeEngine.made, FakeEngine.asked = [], []


def test_vllm_backend_serves_the_adapter_as_a_lora_on_the_same_token_ids(
    adapter_dir: Path, tiny_data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bnr.models import load_tokenizer
    from bnr.recipes import evaluate

    _fake_vllm(monkeypatch)
    cfg = load_config(None, _eval_args(adapter_dir, tiny_data, tmp_path / "ev"))
    out = evaluate.run(cfg)
    (built,) = FakeEngine.made
    assert built["enable_lora"] and built["max_lora_rank"] == 16  # rank 12 -> the next rank vLLM accepts
    (prompts, params, lora) = FakeEngine.asked[0]
    assert lora["path"] == str(adapter_dir) and params["temperature"] == 0.0 and params["max_tokens"] == 4
    rows = [json.loads(x) for x in (out / "harmful.samples.jsonl").read_text().splitlines()]
    tok = load_tokenizer(cfg.model.__class__(name_or_path=built["model"]))
    assert [p["prompt_token_ids"] for p in prompts] == [tok(r["prompt"])["input_ids"] for r in rows]
    assert {r["completion"] for r in rows} == {"I cannot help with that. STOP and more"}
    assert json.loads((out / "manifest.json").read_text())["backend"] == "vllm"


def test_an_engine_generates_through_the_one_loop_with_stop_strings(tiny_lm: tuple[Any, Any]) -> None:
    from bnr.eval.generate import generate

    _, tok = tiny_lm
    engine = types.SimpleNamespace(complete=lambda ids, **kw: [f"a{len(i)} STOP b" for i in ids])
    texts = generate(engine, tok, ["say hello", "name a color please"], stop=["STOP"], progress=False)
    assert texts == [f"a{len(tok(p)['input_ids'])} " for p in ["say hello", "name a color please"]]


def test_vllm_max_lora_rank_covers_the_paper_merge() -> None:
    from bnr.cards import vllm_max_lora_rank

    assert vllm_max_lora_rank(64) == 64 and vllm_max_lora_rank(16) == 16 and vllm_max_lora_rank(65) == 128
