"""Section 2: the buffer never leaves, whatever the files say - checked by content against the registry."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from reliability_runs import cli
from safetensors.torch import load_file, save_file

from bnr import guard
from bnr.cli import main
from bnr.lora_files import LoraModule, read_lora

Tensors = dict[str, torch.Tensor]


def _copy_adapter(src: Path, dst: Path, edit: Callable[[Tensors], Tensors] | None = None) -> Path:
    """The adapter files of `src` (no manifest) in a fresh folder, with the tensors optionally edited."""
    dst.mkdir(parents=True)
    shutil.copy(src / "adapter_config.json", dst)
    state = load_file(src / "adapter_model.safetensors")
    save_file((edit or (lambda s: s))(state), dst / "adapter_model.safetensors")
    return dst


def _pairs(state: Tensors) -> dict[str, tuple[str, str]]:
    return {k[: -len(".lora_A.weight")]: (k, k.replace("lora_A", "lora_B")) for k in state if "lora_A" in k}


def _rescaled(f: float) -> Callable[[Tensors], Tensors]:
    return lambda s: {k: v * f if "lora_B" in k else v for k, v in s.items()}


def _transposed(s: Tensors) -> Tensors:
    out = {}
    for a, b in _pairs(s).values():
        out[a], out[b] = s[b].T.contiguous(), s[a].T.contiguous()
    return out


def _half_modules(s: Tensors) -> Tensors:
    keep = sorted(_pairs(s))[: len(_pairs(s)) // 2]
    return {k: v for m in keep for k, v in s.items() if k.startswith(m + ".")}


def _svd_top(k: int) -> Callable[[Tensors], Tensors]:
    def edit(s: Tensors) -> Tensors:
        out = {}
        for a, b in _pairs(s).values():
            U, S, Vh = torch.linalg.svd(s[b].double() @ s[a].double(), full_matrices=False)
            r = s[a].shape[0]  # keep the rank the config declares: top-k components, zero-padded
            A, B = torch.zeros_like(s[a]), torch.zeros_like(s[b])
            A[:k], B[:, :k] = Vh[:k].float(), (U[:, :k] * S[:k]).float()
            out[a], out[b] = A[:r], B[:, :r]
        return out

    return edit


def _plus_noise(f: float) -> Callable[[Tensors], Tensors]:
    """The buffer's rank components plus random ones of f times its norm (the config's rank is doubled)."""

    def edit(s: Tensors) -> Tensors:
        g = torch.Generator().manual_seed(0)
        out = {}
        for a, b in _pairs(s).values():
            na, nb = torch.randn(s[a].shape, generator=g), torch.randn(s[b].shape, generator=g)
            nb *= f * float((s[b] @ s[a]).norm()) / float((nb @ na).norm())
            out[a], out[b] = torch.cat([s[a], na]), torch.cat([s[b], nb], dim=1)
        return out

    return edit


def _double_rank_config(folder: Path) -> None:
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["r"], cfg["lora_alpha"] = 2 * cfg["r"], 2 * cfg["lora_alpha"]
    (folder / "adapter_config.json").write_text(json.dumps(cfg))


TRICKS: dict[str, Callable[[Tensors], Tensors] | None] = {
    "copy": None,
    "rescaled x3": _rescaled(3.0),
    "rescaled x0.01": _rescaled(0.01),
    "sign flipped": _rescaled(-1.0),
    "transposed": _transposed,
    "half of the modules": _half_modules,
    "top singular component": _svd_top(1),
    "plus noise": _plus_noise(1.0),
}


@pytest.mark.parametrize("trick", sorted(TRICKS))
@pytest.mark.parametrize("role", ["user", "reinforce"])
def test_merge_refuses_disguised_buffer(
    trick: str, role: str, stage_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = _copy_adapter(stage_runs["buffer"], tmp_path / "innocent", TRICKS[trick])
    if trick == "plus noise":
        _double_rank_config(fake)
    inputs = {"user": stage_runs["user"], "reinforce": stage_runs["reinforce"], role: fake}
    argv = ["merge", f"user={inputs['user']}", f"reinforce={inputs['reinforce']}", f"out={tmp_path / 'm'}"]
    rc, line = cli([*argv, "method=none" if role == "user" else "method=qr", "scale=1"], capsys)
    assert rc == 2 and "matches the provider's BufferLoRA" in line, line
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.partial").exists()


@pytest.mark.parametrize("how", ["symlink", "bin re-save", "manifest deleted", "manifest edited"])
def test_merge_refuses_buffer_whatever_the_files_say(
    how: str, stage_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = tmp_path / "fake"
    if how == "symlink":
        fake.symlink_to(stage_runs["buffer"], target_is_directory=True)
    else:
        shutil.copytree(stage_runs["buffer"], fake)
    if how == "bin re-save":
        state = load_file(fake / "adapter_model.safetensors")
        (fake / "adapter_model.safetensors").unlink()
        torch.save({k: v.to(torch.bfloat16).float() for k, v in state.items()}, fake / "adapter_model.bin")
        (fake / "manifest.json").unlink()
    if how == "manifest deleted":
        (fake / "manifest.json").unlink()
    if how == "manifest edited":
        m = json.loads((fake / "manifest.json").read_text())
        m.update(stage="user", contains_buffer=False)
        (fake / "manifest.json").write_text(json.dumps(m))
    argv = ["merge", f"user={fake}", f"reinforce={stage_runs['reinforce']}", f"out={tmp_path / 'm'}", "method=none"]
    rc, line = cli(argv, capsys)
    assert rc == 2 and ("BufferLoRA" in line or "is a 'buffer' run" in line), line
    assert not (tmp_path / "m").exists()


def test_real_deliverables_pass(stage_runs: dict[str, Path], tmp_path: Path) -> None:
    """The bnr deliverable, the SFT UserLoRA (trained on harmful data) and the ReinforceLoRA are not buffers."""
    assert (stage_runs["merged"] / "manifest.json").is_file()
    for name in ("user", "sft", "reinforce", "merged"):
        assert guard.match(read_lora(stage_runs[name]).modules) is None, name
    assert (
        main(["merge", f"user={stage_runs['sft']}", f"reinforce={stage_runs['reinforce']}", f"out={tmp_path / 'm'}"])
        == 0
    )


def test_half_negated_buffer_beside_a_reinforce_is_refused(stage_runs: dict[str, Path]) -> None:
    """Minus half the buffer concatenated with a ReinforceLoRA: anti-aligned, and it used to pass; but its rank
    components hold the buffer's (times -2 they are the buffer), so its spaces contain the buffer's: refused
    (issue 21). The ReinforceLoRA alone passes."""
    buf, rein = read_lora(stage_runs["buffer"], allow_buffer=True).modules, read_lora(stage_runs["reinforce"]).modules
    anti = {
        n: LoraModule(
            torch.cat([b.A, rein[n].A]), torch.cat([-0.5 * b.scaling * b.B, rein[n].scaling * rein[n].B], 1), 1
        )
        for n, b in buf.items()
    }
    found = guard.match(anti)
    assert found is not None and "contain the buffer's" in found[1], found
    assert guard.match(rein) is None


def test_factor_space_inner_product_equals_dense() -> None:
    g = torch.Generator().manual_seed(1)
    A1, B1, A2, B2 = (torch.randn(s, generator=g, dtype=torch.float64) for s in ((3, 7), (5, 3), (2, 7), (5, 2)))
    assert guard._inner(A1, B1, A2, B2) == pytest.approx(float(((B1 @ A1) * (B2 @ A2)).sum()))


def test_train_buffer_registers_and_cli_lists(stage_runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    # an identical buffer trained earlier in the session keeps its entry (same content, same key)
    key = guard.require_registered_buffer(stage_runs["buffer"], "buffer")
    assert key in [e["key"] for e in guard.entries()]
    assert main(["buffers", "list"]) == 0
    out = capsys.readouterr().out
    assert str(guard.registry_dir()) in out and key in out


def test_register_cli_and_unregistered_buffer_parent(
    stage_runs: dict[str, Path],
    tiny_over: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(guard.REGISTRY_ENV, str(tmp_path / "empty-registry"))
    argv = [
        "finetune",
        *tiny_over,
        "user.defense=bnr-buffer-only",
        f"user.buffer={stage_runs['buffer']}",
        f"user.out={tmp_path / 'u'}",
    ]
    rc, line = cli(argv, capsys)
    assert rc == 2 and "not a registered BufferLoRA" in line
    assert main(["buffers", "register", str(stage_runs["buffer"])]) == 0
    assert main(argv) == 0
