"""FSDP in the training loop (bnr.distributed.shard_model): sharding choices and refusals (fast), and the sharded
loop on 2 CPU processes (gloo) against 1 process, with resume and rank-0-only writes (slow)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from bnr import adapters, distributed
from bnr.config import LoraConfig, TrainConfig
from bnr.errors import BnrError

# the equality check's tolerance: 2 sharded processes sum gradients in another order than 1 (float32 round-off only)
ATOL = 1e-6
# what `accelerate launch --use_fsdp --fsdp_version 2` sets for the processes it starts
FSDP_ENV = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}


def _as_fsdp_rank(monkeypatch: pytest.MonkeyPatch, rank: int = 0, version: str = "2") -> None:
    for k, v in {"WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank), **FSDP_ENV}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("FSDP_VERSION", version)


def test_fsdp_is_off_unless_launched_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert not distributed.uses_fsdp()  # one process: nothing to shard across
    _as_fsdp_rank(monkeypatch)
    assert distributed.uses_fsdp()
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    assert not distributed.uses_fsdp()


def test_decoder_layers_are_the_fsdp_units(tiny_lm: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from bnr.distributed import _fsdp_layer_names

    model = tiny_lm[0]
    assert _fsdp_layer_names(model) == {"LlamaDecoderLayer"}  # the model's own _no_split_modules
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "LlamaMLP, LlamaAttention")
    assert _fsdp_layer_names(model) == {"LlamaMLP", "LlamaAttention"}
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "GPT2Block")
    with pytest.raises(BnrError, match="GPT2Block"):
        _fsdp_layer_names(model)


def test_fsdp1_is_refused_with_the_flag_to_add(tiny_lm: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    _as_fsdp_rank(monkeypatch, version="1")  # accelerate's default --fsdp_version
    with pytest.raises(BnrError, match="--fsdp_version 2"):
        distributed.shard_model(tiny_lm[0])


def test_step_callbacks_are_refused_under_fsdp(tiny_lm: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from bnr.train import StepCallback, TrainHooks, train

    class Edits(StepCallback):
        pass

    _as_fsdp_rank(monkeypatch)
    monkeypatch.setattr(distributed, "barrier", lambda: None)  # no other rank in this test
    monkeypatch.setattr(distributed, "gather", lambda obj: [obj, obj])
    model = adapters.add_adapter(tiny_lm[0], "fsdp-test", LoraConfig(r=2, alpha=4, target_modules=["q_proj"]))
    try:
        adapters.set_active(model, ["fsdp-test"], ["fsdp-test"])
        with pytest.raises(BnrError, match=r"step callbacks \(Edits\).*without --use_fsdp"):
            train(model, [], TrainConfig(), seed=1, pad_id=0, hooks=TrainHooks(callbacks=[Edits()]))
    finally:
        model.unload()


def test_a_quantised_base_is_not_sharded(tiny_lm: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from bnr.strategy import shard as _shard

    model = tiny_lm[0]
    model.is_loaded_in_4bit = True
    try:
        with pytest.raises(BnrError, match="cannot shard a bitsandbytes-quantised base"):
            _shard(model, [])
    finally:
        del model.is_loaded_in_4bit


def test_merging_into_sharded_weights_is_refused(
    tiny_lm: tuple[Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(distributed, "is_sharded", lambda model: True)
    with pytest.raises(BnrError, match="already sharded"):
        adapters.attach_frozen(tiny_lm[0], tmp_path, adapters.BUFFER, "merged")


def test_a_checkpoint_resumes_only_the_way_it_was_made(tiny_lm: tuple[Any, Any], tmp_path: Path) -> None:
    from bnr.train import load_checkpoint

    ckpt = tmp_path / "last.pt"
    torch.save({"callbacks": [], "sharded": True}, ckpt)
    with pytest.raises(BnrError, match="saved with FSDP and this run is without it"):
        load_checkpoint(ckpt, tiny_lm[0], None, None)


# --- real processes: slow -------------------------------------------------------------------------------------


def _env(tmp: Path, fsdp: bool) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    tests = str(Path(__file__).resolve().parent)
    path = os.pathsep.join([src, tests, os.environ.get("PYTHONPATH", "")])
    (tmp / "scratch").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FSDP_", "ACCELERATE_"))}
    env.update({"PYTHONPATH": path, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp / "scratch")})
    return {**env, **FSDP_ENV} if fsdp else env


def _buffer(model_dir: Path, out: Path) -> Path:
    """A frozen BufferLoRA for the tiny model with non-zero B, so merging it changes the base."""
    from bnr.config import ModelConfig
    from bnr.models import load_model

    model = load_model(ModelConfig(name_or_path=str(model_dir), device="cpu"))
    model = adapters.add_adapter(model, adapters.BUFFER, LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    out.mkdir()
    adapters.save_adapter(model, adapters.BUFFER, out)
    return out


@pytest.mark.slow
def test_fsdp_on_two_processes_equals_one_process_and_resumes(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    worker = str(Path(__file__).with_name("fsdp_worker.py"))
    buffer = _buffer(tiny_model_dir, tmp_path / "buffer")
    results = {}
    for n in (1, 2):
        out = tmp_path / f"n{n}"
        out.mkdir()
        run = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
        args = [worker, str(tiny_model_dir), str(tiny_data["benign"]), str(buffer), str(out)]
        subprocess.run([*run, *args], check=True, env=_env(tmp_path, fsdp=n == 2), timeout=900)
        results[n] = torch.load(out / "result.pt")
    two, one = results[2], results[1]
    assert two["world"] == 2 and one["world"] == 1
    for mode in ("none", "merged", "separate"):
        assert two[f"sharded-{mode}"] and not one[f"sharded-{mode}"]
        (whole2, resumed2), (whole1, resumed1) = two[mode], one[mode]
        saved = load_file(tmp_path / "n2" / f"rank0-{mode}" / "adapter_model.safetensors")
        assert len(saved) == len(whole2) == 2 * 2 * 2  # 2 layers x (q, v) x (A, B), gathered whole
        for name, w in whole2.items():
            assert torch.equal(resumed2[name], w), (mode, name)  # resume is exact when sharded too
            assert torch.equal(resumed1[name], whole1[name]), (mode, name)
            assert torch.allclose(w, whole1[name], atol=ATOL), (mode, name)  # FSDP on 2 == 1 process
            assert not torch.equal(w, torch.zeros_like(w))
        key = lambda n: n.replace(f".{adapters.USER}.", ".")  # noqa: E731 - PEFT files drop the adapter name
        assert all(torch.equal(saved[key(n)], w) for n, w in whole2.items()), mode
    plain, merged = one["none"][0], one["merged"][0]
    assert any(not torch.allclose(plain[n], merged[n]) for n in plain)  # the buffer under it changed the training


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["accelerate", "bnr --nproc"])
def test_finetune_under_accelerate_fsdp_writes_the_one_process_run_once(
    launcher: str, tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """`accelerate launch --use_fsdp --fsdp_version 2` (or `bnr ... --nproc 2 --fsdp`) on 2 CPU processes;
    micro-batches of 11 then 1 example, so rank 1 has no example of every second micro-batch (it runs the forward
    and backward with weight 0)."""
    from conftest import assert_launched_run_is_the_one_process_run, tiny_overrides

    def args(out: Path) -> list[str]:
        overrides = tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "unused")
        fixed = ["model.device=cpu", "user.defense=none", "user.lora.dropout=0", "user.train.epochs=2"]
        return ["-m", "bnr.cli", "finetune", *overrides, *fixed, "user.train.batch_size=11", f"user.out={out}"]

    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, *args(one)], check=True, env=_env(tmp_path, fsdp=False), timeout=600)
    launch = ["-m", "accelerate.commands.launch", "--use_fsdp", "--fsdp_version", "2", "--num_processes", "2"]
    command = [*launch, *args(two)] if launcher == "accelerate" else [*args(two), "--nproc", "2", "--fsdp"]
    done = subprocess.run(
        [sys.executable, *command],
        env=_env(tmp_path, fsdp=False),
        timeout=600,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "FSDP: the weights are sharded across 2 processes, in 3 units" in done.stderr  # 2 decoder layers + root
    assert assert_launched_run_is_the_one_process_run(one, two, tmp_path / "scratch", ATOL) == [1, 2, 3, 4]


@pytest.mark.slow
def test_pipeline_under_fsdp_equals_one_process(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """Every stage sharded: the buffer, the reinforce LoRA on the merged buffer, the UserLoRA beside the buffer
    kept separate; the merged deliverable too."""
    from safetensors.torch import load_file

    from conftest import tiny_overrides

    def args(out: Path) -> list[str]:
        fixed = ["model.device=cpu", "user.buffer_mode=separate", "user.defense=bnr"]
        fixed += [f"{stage}.lora.dropout=0" for stage in ("buffer", "reinforce", "user")]
        return ["-m", "bnr.cli", "pipeline", *tiny_overrides(tiny_model_dir, tiny_data, out), *fixed]

    env = _env(tmp_path, fsdp=False)
    subprocess.run([sys.executable, *args(tmp_path / "one")], check=True, env=env, timeout=600)
    launch = ["-m", "accelerate.commands.launch", "--use_fsdp", "--fsdp_version", "2", "--num_processes", "2"]
    done = subprocess.run([sys.executable, *launch, *args(tmp_path / "two")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("FSDP: the weights are sharded") == 3  # buffer, reinforce, user
    for stage in ("buffer", "reinforce", "user", "final"):
        a, b = (load_file(tmp_path / n / stage / "adapter_model.safetensors") for n in ("one", "two"))
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=ATOL) for k in a), stage
