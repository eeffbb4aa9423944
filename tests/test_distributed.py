"""Launched jobs (bnr.distributed): shards, token-weighted losses, rank-0-only writes; 2 CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from bnr import adapters, distributed
from bnr.artifacts import is_complete
from bnr.config import LoraConfig, ModelConfig
from bnr.errors import BnrError
from bnr.runs.writer import RunWriter

# the equality check's tolerance: 2 processes sum gradients in another order than 1 (float32 round-off only)
ATOL = 1e-6


def _as_rank(monkeypatch: pytest.MonkeyPatch, rank: int, world: int = 2) -> None:
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))


def test_unlaunched_is_one_process() -> None:
    assert not distributed.launched() and distributed.is_main()
    assert distributed.accelerator() is None
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    assert distributed.main_first(lambda: 7) == 7
    assert distributed.gather("x") == ["x"]


def test_shards_are_contiguous_and_cover_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    parts = []
    for r in range(3):
        _as_rank(monkeypatch, r, 3)
        parts.append(distributed.shard(list(range(7))))
    assert parts == [[0, 1, 2], [3, 4], [5, 6]]
    _as_rank(monkeypatch, 1, 3)
    assert distributed.shard([0]) == []  # a rank may get nothing from a short last micro-batch


def test_weighted_shares_give_the_one_process_loss_and_gradient(
    tiny_model_dir: Path, tiny_data: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The invariant the launched loop rests on: sum over ranks of weight x shard loss == the micro-batch loss."""
    from bnr.config import DataConfig
    from bnr.data.sources import load_records
    from bnr.data.tokenize import collate, encode_records
    from bnr.models import load_model_and_tokenizer
    from bnr.strategy import my_share as _my_share

    model, tok = load_model_and_tokenizer(ModelConfig(name_or_path=str(tiny_model_dir), device="cpu"))
    model = adapters.add_adapter(
        model, adapters.USER, LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj"])
    )
    params = adapters.set_active(model, [adapters.USER], [adapters.USER])
    with torch.no_grad():
        for p in params:
            p.normal_(0, 0.1)  # B starts at zero; make the gradient of A non-trivial too
    examples = encode_records(tok, load_records(DataConfig(path=str(tiny_data["benign"]))), "alpaca", 96)[:5]
    full = model(**collate(examples, tok.pad_token_id)).loss
    want = torch.autograd.grad(full, params)
    total, grads, weights = torch.zeros(()), [torch.zeros_like(p) for p in params], []
    for r in range(2):
        _as_rank(monkeypatch, r)
        mine, w = _my_share(examples)
        loss = model(**collate(mine, tok.pad_token_id)).loss * w
        total = total + loss.detach()
        grads = [g + d for g, d in zip(grads, torch.autograd.grad(loss, params))]
        weights.append(w)
    assert sum(weights) == pytest.approx(1.0) and weights[0] != weights[1]  # uneven shards: 3 and 2 examples
    assert torch.allclose(total, full.detach(), atol=ATOL)
    assert all(torch.allclose(g, w, atol=ATOL) for g, w in zip(grads, want))


def test_other_ranks_write_nothing_beside_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _as_rank(monkeypatch, 1)
    monkeypatch.setattr(distributed, "barrier", lambda: None)  # rank 0 is not there in this test
    writer = RunWriter(tmp_path / "run", "user")
    assert tmp_path not in writer.tmp.parents and writer.checkpoint_dir == tmp_path / "run.partial" / "checkpoints"
    writer.write_config("seed: 1\n")
    writer.log_metrics({"stage": "user", "step": 1})
    (writer.tmp / "adapter_model.safetensors").write_bytes(b"x")
    assert writer.finalize({}) == tmp_path / "run"
    assert list(tmp_path.iterdir()) == [] and not writer.tmp.exists()


def test_merged_attach_is_refused_on_a_quantised_base(tiny_lm: tuple[Any, Any], tmp_path: Path) -> None:
    model, _ = tiny_lm
    model.is_loaded_in_4bit = True
    try:
        with pytest.raises(BnrError, match="buffer_mode=separate"):
            adapters.attach_frozen(model, tmp_path, adapters.BUFFER, "merged")
    finally:
        del model.is_loaded_in_4bit


def test_4bit_needs_a_cuda_device(tiny_model_dir: Path) -> None:
    from bnr.models import load_model

    with pytest.raises(BnrError, match="needs a CUDA device"):
        load_model(ModelConfig(name_or_path=str(tiny_model_dir), device="cpu", quantize="4bit"))


# --- real processes: slow -------------------------------------------------------------------------------------


def _env(tmp: Path) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    tests = str(Path(__file__).resolve().parent)
    path = os.pathsep.join([src, tests, os.environ.get("PYTHONPATH", "")])
    (tmp / "scratch").mkdir(exist_ok=True)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp / "scratch")}


def _torchrun(n: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]


ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes=2"]


@pytest.mark.slow
def test_resume_on_two_processes_equals_uninterrupted_and_one_process(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    worker = str(Path(__file__).with_name("dist_worker.py"))
    results = {}
    for n in (1, 2):
        out = tmp_path / f"n{n}"
        out.mkdir()
        cmd = [*_torchrun(n), worker, str(tiny_model_dir), str(tiny_data["benign"]), str(out)]
        subprocess.run(cmd, check=True, env=_env(tmp_path), timeout=600)
        results[n] = torch.load(out / "result.pt")
    two, one = results[2], results[1]
    assert two["world"] == 2 and one["world"] == 1
    for name, w in two["whole"].items():
        assert torch.equal(two["resumed"][name], w), name  # resume is exact on 2 processes too
        assert torch.equal(one["resumed"][name], one["whole"][name]), name
        assert torch.allclose(w, one["whole"][name], atol=ATOL), name  # 2 processes == 1, up to round-off
        assert not torch.equal(w, torch.zeros_like(w))


def _finetune_args(tiny_model_dir: Path, tiny_data: dict[str, Path], out: Path) -> list[str]:
    from conftest import tiny_overrides

    return [
        "-m",
        "bnr.cli",
        "finetune",
        *tiny_overrides(tiny_model_dir, tiny_data, out.parent / "unused"),
        "model.device=cpu",
        "user.defense=none",
        "user.lora.dropout=0",
        "user.train.epochs=2",
        "user.train.batch_size=5",
        f"user.out={out}",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate", "bnr --nproc"])
def test_finetune_on_two_processes_writes_the_one_process_run_once(
    launcher: str, tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    from conftest import assert_launched_run_is_the_one_process_run

    env = _env(tmp_path)
    args = _finetune_args(tiny_model_dir, tiny_data, tmp_path / "one")
    subprocess.run([sys.executable, *args], check=True, env=env, timeout=600)
    two = tmp_path / "two"
    launch = {"torchrun": _torchrun(2)[1:], "accelerate": ACCELERATE[1:], "bnr --nproc": []}[launcher]
    args = _finetune_args(tiny_model_dir, tiny_data, two) + (["--nproc", "2"] if launcher == "bnr --nproc" else [])
    done = subprocess.run([sys.executable, *launch, *args], check=True, env=env, timeout=600, capture_output=True)
    one = tmp_path / "one"
    assert done.stdout.decode().count("deliverable:") == 1  # rank 0 alone prints
    assert_launched_run_is_the_one_process_run(one, two, tmp_path / "scratch", ATOL)


def test_nproc_checks_its_knobs_before_it_starts_a_process(capsys: pytest.CaptureFixture[str]) -> None:
    from bnr.cli import main

    for flags, message in (
        (["--nproc", "0"], "--nproc must be at least 1 (got 0)"),
        (["--fsdp"], "--fsdp shards the model across processes: give --nproc N with N >= 2"),
        (["--nproc", "2", "user.p=7"], "user.p must be in [0, 1] (got 7.0)"),  # the config, checked once
    ):
        assert main(["finetune", "-c", "toy", *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("bnr: error:") == 1 and message in err, err


def test_a_failed_rank_is_one_line_each_and_no_launcher_traceback(tmp_path: Path) -> None:
    """Two real processes that both fail at run time (a missing parent run): each prints its one-line error, the
    launcher adds one line naming the first failed rank, and no torchrun traceback or failure report is shown. A
    rank that the launcher stops (SIGTERM) before it gets as far as the check stays quiet, so one or two ranks
    print the error (which depends on how far the slower one got)."""
    cmd = [sys.executable, "-m", "bnr.cli", "finetune", "-c", "toy", "--nproc", "2", f"user.buffer={tmp_path}/none"]
    done = subprocess.run(cmd, env=_env(tmp_path), timeout=300, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert all(line.startswith("bnr: error: ") for line in lines), done.stderr
    assert 1 <= sum("missing parent run" in line for line in lines) <= 2
    assert len(lines) == 1 + sum("missing parent run" in line for line in lines)
    assert "2 of 2 processes failed, first rank" in lines[-1] and "(exit code 2)" in lines[-1]


@pytest.mark.slow
def test_eval_on_two_processes_splits_the_prompts_and_writes_the_one_process_result_once(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    env, worker = _env(tmp_path), str(Path(__file__).with_name("eval_worker.py"))
    common = [f"model.name_or_path={tiny_model_dir}", "model.device=cpu", "benchmarks=harmful", "judges=keyword"]
    common += [f"eval.data.harmful.path={tiny_data['harmful']}", "eval.progress=false", "eval.max_new_tokens=6"]
    common += ["eval.batch_size=2", "eval.cache=null"]
    for n in (1, 2):
        (tmp_path / f"counts{n}").mkdir()
        cmd = [*_torchrun(n), worker, str(tmp_path / f"counts{n}"), *common, f"out={tmp_path / f'n{n}'}"]
        done = subprocess.run(cmd, check=True, env=env, timeout=600, capture_output=True)
        assert done.stdout.decode().count("results in") == 1  # rank 0 alone reports
    one, two = (
        [json.loads(x) for x in (tmp_path / d / "harmful.samples.jsonl").read_text().splitlines()]
        for d in ("n1", "n2")
    )
    assert len(one) >= 3 and [r["completion"] for r in two] == [r["completion"] for r in one]
    assert [r["id"] for r in two] == [r["id"] for r in one]
    shares = [int((tmp_path / "counts2" / f"rank{r}.txt").read_text()) for r in (0, 1)]
    assert sum(shares) == len(one) and max(shares) - min(shares) <= 1  # each process generated its share
    assert is_complete(tmp_path / "n2") and not (tmp_path / "n2.partial").exists()
