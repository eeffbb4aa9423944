"""Issue 21 section 3: a base is identified by the content of its weights, not by their names and sizes.

The scenario: a copy of the base folder with the buffer merged into its weights, saved with the same file sizes.
It used to count as the same base: `merge ... model.name_or_path=<it> method=none full_model=true` exported a
jailbroken full model and `finetune` trained on it; the response cache reported the old numbers after an in-place
swap of the weights.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from reliability_runs import cli
from safetensors.torch import load_file, save_file

from bnr import filehash
from bnr.config import ModelConfig
from bnr.eval.target import Target
from bnr.lora_files import read_lora


def _buffered_base(base: Path, buffer: Path, out: Path) -> Path:
    """`base` copied to `out` with the buffer's delta added to its weights in place (same names, shapes, sizes)."""
    shutil.copytree(base, out)
    weights = out / "model.safetensors"
    state = load_file(weights)
    for name, m in read_lora(buffer, allow_buffer=True).modules.items():
        w = state[f"{name}.weight"]
        state[f"{name}.weight"] = (w.double() + m.scaling * m.B.double() @ m.A.double()).to(w.dtype)
    save_file(state, weights, metadata={"format": "pt"})
    assert weights.stat().st_size == (base / "model.safetensors").stat().st_size
    return out


@pytest.fixture()
def buffered(stage_runs: dict[str, Path], tiny_model_dir: Path, tmp_path: Path) -> Path:
    return _buffered_base(tiny_model_dir, stage_runs["buffer"], tmp_path / "buffered-base")


def test_finetune_on_a_buffered_base_is_refused(
    buffered: Path,
    stage_runs: dict[str, Path],
    tiny_over: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["finetune", *tiny_over, "user.defense=bnr-buffer-only", f"model.name_or_path={buffered}"]
    rc, line = cli([*argv, f"user.buffer={stage_runs['buffer']}", f"user.out={tmp_path / 'u'}"], capsys)
    assert rc == 2 and "content hashes differ" in line, line


def test_merge_full_model_on_a_buffered_base_is_refused(
    buffered: Path, stage_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["merge", f"user={stage_runs['user']}", f"reinforce={stage_runs['reinforce']}", f"out={tmp_path / 'm'}"]
    rc, line = cli([*argv, f"model.name_or_path={buffered}", "method=none", "full_model=true"], capsys)
    assert rc == 2 and "content hashes differ" in line, line
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.partial").exists()


def test_response_cache_key_follows_weights_swapped_in_place(
    buffered: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    target = Target("model", str(base), ModelConfig(name_or_path=str(base)), None)
    before = target.key()
    shutil.copy(buffered / "model.safetensors", base / "model.safetensors")  # same size, other bytes
    assert target.key() != before


def test_file_hash_is_cached_and_invalidated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BNR_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"a" * 1000)
    first = filehash.file_sha256(f)
    assert filehash.cache_path().is_file()  # later processes reuse it
    reads: list[Path] = []
    real_open = open

    def counting_open(path: object, *args: object, **kwargs: object) -> object:
        if Path(str(path)) == f:
            reads.append(f)
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", counting_open)
    filehash._MEMORY.clear()
    assert filehash.file_sha256(f) == first and reads == []  # from the disk cache, the file is not read again
    st = f.stat()
    f.write_bytes(b"b" * 1000)  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the old mtime put back
    assert filehash.file_sha256(f) != first and reads == [f]
