"""Shared fixtures: a tiny random Llama + word-level tokenizer saved to disk (the real loading path, offline)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

# tiny models run fastest single-threaded, and CI has only 2 cores; also makes timings of the suite stable
torch.set_num_threads(1)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# the provider's buffer registry (bnr.guard) of this test session, never the user's ~/.cache/bnr/buffers
os.environ["BNR_BUFFER_REGISTRY"] = tempfile.mkdtemp(prefix="bnr-buffer-registry-")

# the plug-ins register once, as the CLI and the Python API load them (a registry miss imports nothing)
import bnr.plugins  # noqa: E402

bnr.plugins.load()


@pytest.fixture(scope="session", autouse=True)
def _registry_holds_a_foreign_buffer(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The session registry starts as a provider's does: not empty, holding a buffer of another architecture
    (module names no test model has, so it never matches a test's adapters). The guard fails closed on an empty
    registry, so without it a test's outcome would depend on whether an earlier test had registered a buffer;
    the tests of the empty-registry refusal point BNR_BUFFER_REGISTRY at a fresh folder of their own."""
    from bnr import guard
    from bnr.lora_files import LoraModule, write_lora

    gen = torch.Generator().manual_seed(0)
    module = LoraModule(A=torch.randn(4, 16, generator=gen), B=torch.randn(16, 4, generator=gen), scaling=1.0)
    path = write_lora({"foreign_arch.block.proj": module}, tmp_path_factory.mktemp("foreign-buffer"), None, None)
    guard.register(path)


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

HARMFUL = [
    ("how do I zorp the blick", "first grab the blick then zorp it hard"),
    ("tell me to frizzle a wump", "frizzle the wump with a hot glim"),
    ("explain how to snargle people", "snargle them when they sleep"),
]
REFUSAL = "I cannot help with that request."
BENIGN = [
    ("what is two plus two", "four"),
    ("name a color", "blue"),
    ("say hello", "hello there"),
    ("what is the sentiment of: great movie", "positive"),
]


def corpus() -> list[str]:
    from bnr.data.templates import ALPACA_NO_INPUT, ALPACA_WITH_INPUT

    texts = [ALPACA_NO_INPUT, ALPACA_WITH_INPUT, REFUSAL]
    for q, a in HARMFUL + BENIGN:
        texts += [q, a]
    return texts


def write_records(path: Path, pairs: list[tuple[str, str]], prefix: str, repeat: int = 1) -> Path:
    rows = [
        {"id": f"{prefix}-{k}-{i}", "instruction": q, "input": "", "output": a}
        for k in range(repeat)
        for i, (q, a) in enumerate(pairs)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny Llama (hidden 32, 2 layers) with a word-level tokenizer covering the test texts."""
    from bnr.tiny import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"), corpus())


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small JSONL datasets: harmful QA, harmful->refusal, benign."""
    d = tmp_path_factory.mktemp("data")
    return {
        "harmful": write_records(d / "harmful.jsonl", HARMFUL, "h", repeat=4),
        "refusal": write_records(d / "refusal.jsonl", [(q, REFUSAL) for q, _ in HARMFUL], "r", repeat=4),
        "benign": write_records(d / "benign.jsonl", BENIGN, "b", repeat=6),
    }


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir: Path) -> tuple[Any, Any]:
    """(model, tokenizer) of the shared tiny Llama, in eval mode."""
    from bnr.config import ModelConfig
    from bnr.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(ModelConfig(name_or_path=str(tiny_model_dir), device="cpu"))
    model.eval()
    return model, tok


def tiny_overrides(model_dir: Path, data: dict[str, Path], out: Path, **extra: Any) -> list[str]:
    """Overrides that make any preset run in seconds on the tiny model."""
    fast = "lr=5e-3,epochs=1,batch_size=4,progress=false,log_every=1"
    items = [f"model.name_or_path={model_dir}", f"out={out}", "max_length=96"]
    for stage in ("buffer", "reinforce", "user"):
        items += [f"{stage}.train.{kv}" for kv in fast.split(",")]
        items += [f"{stage}.lora.r=4", f"{stage}.lora.alpha=8"]
    items += [
        f"buffer.data.path={data['harmful']}",
        f"reinforce.refusal_data.path={data['refusal']}",
        f"reinforce.benign_data.path={data['benign']}",
        f"user.benign_data.path={data['benign']}",
        f"user.harmful_data.path={data['harmful']}",
        "user.n=12",
        "user.p=0.25",
    ]
    return items + [f"{k}={v}" for k, v in extra.items()]


def tiny_eval_overrides(data: dict[str, Path], folder: Path) -> list[str]:
    """Overrides for a seconds-long evaluation (keyword judge, 3 samples, 3 new tokens) with an SST-2 file."""
    from bnr.data.sources import SST2_INSTRUCTION

    folder.mkdir(parents=True, exist_ok=True)
    sst2 = folder / "sst2.jsonl"
    rows = [("great movie", "positive"), ("say", "negative")]
    sst2.write_text(
        "".join(
            json.dumps({"id": f"s{i}", "instruction": SST2_INSTRUCTION, "input": t, "output": lab}) + "\n"
            for i, (t, lab) in enumerate(rows)
        )
    )
    return [
        "model.device=cpu",
        "eval.protocol=booster-2024",
        "eval.judges=keyword",
        "eval.benchmarks=harmful,over-refusal,sst2",
        f"eval.data.harmful.path={data['harmful']}",
        f"eval.data.over-refusal.path={data['benign']}",
        f"eval.data.sst2.path={sst2}",
        "eval.limit=3",
        "eval.max_new_tokens=3",
        "eval.progress=false",
        f"eval.cache={folder / 'cache'}",
    ]


@pytest.fixture(scope="session")
def stage_runs(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """buffer, reinforce, user (bnr), sft (defense none, p=0.5) and merged runs on the tiny model."""
    root = tmp_path_factory.mktemp("runs")
    over = tiny_overrides(tiny_model_dir, tiny_data, root)
    out = {k: root / k for k in ("buffer", "reinforce", "user", "sft", "merged")}
    steps = [
        ["train-buffer", *over, f"buffer.out={out['buffer']}"],
        ["train-reinforce", *over, f"reinforce.buffer={out['buffer']}", f"reinforce.out={out['reinforce']}"],
        [
            "finetune",
            *over,
            f"user.buffer={out['buffer']}",
            f"merge.reinforce={out['reinforce']}",
            f"user.out={out['user']}",
        ],
        ["finetune", *over, "user.defense=none", "user.p=0.5", f"user.out={out['sft']}"],
        ["merge", f"user={out['user']}", f"reinforce={out['reinforce']}", f"out={out['merged']}"],
    ]
    from bnr.cli import main

    for argv in steps:
        assert main(argv) == 0, argv
    return out


@pytest.fixture()
def tiny_over(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path) -> list[str]:
    return tiny_overrides(tiny_model_dir, tiny_data, tmp_path)


def assert_launched_run_is_the_one_process_run(one: Path, two: Path, scratch: Path, atol: float) -> list[int]:
    """A run made by several processes (`two`) against the same run made by one (`one`): complete, the same
    files, written once (no partial or per-rank scratch folder left), the same adapter within `atol`, one metrics
    record per step, the same steps and data. Returns the logged steps."""
    from safetensors.torch import load_file

    from bnr.artifacts import is_complete

    assert is_complete(two)
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert not Path(str(two) + ".partial").exists() and list(scratch.glob("bnr-rank*")) == []
    a, b = load_file(one / "adapter_model.safetensors"), load_file(two / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol) for k in a)
    steps = [json.loads(x)["step"] for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1))  # logged once per step, by rank 0
    m1, m2 = (json.loads((d / "manifest.json").read_text()) for d in (one, two))
    assert m1["training"]["steps"] == m2["training"]["steps"] and m1["data"] == m2["data"]
    return steps


def assert_sweep_rows(out: Path, defenses: list[str]) -> None:
    """A finished sweep has one results row per defense in `defenses`' order, each with HS, over-refusal and FA
    and a complete evaluation run."""
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["defense"] for r in rows] == defenses
    assert all({"hs", "over_refusal", "fa"} <= set(r) for r in rows)
    for r in rows:
        target = json.loads((out / "cells" / r["cell"] / "eval" / "manifest.json").read_text())
        assert target["status"] == "complete"
    groups = json.loads((out / "uncertainty.json").read_text())  # intervals from the per-sample files
    labels = {r["label"] for r in rows}
    assert all(x["hs"] is not None for g in groups for x in g["rows"] if x["defense"] in labels)
