"""Issue 21 section 1: a buffer laundered inside its own column and row spaces is refused by subspace energy.

The laundered variants (tests/reliability/laundering.py) have a cosine with the buffer near zero or negative, so the
cosine scores pass them; the energy scores (`share` of the candidate's energy inside the buffer's spaces, and
`coverage` of the buffer's spaces by the candidate's with more than a chance-level share there) refuse them, as
`merge user=` and `reinforce=`, while real adapters pass.
docs/reliability.md shows what they score behaviourally on the toy world.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from laundering import VARIANTS, split
from reliability_runs import cli

from bnr import guard
from bnr.config import GuardConfig
from bnr.lora_files import LoraModule, read_lora, write_lora


def _scores(modules: dict[str, LoraModule], buffer_run: Path) -> guard.Similarity:
    """The guard's scores of `modules` against the registered buffer of run `buffer_run` (the session's registry
    holds the buffers of other tests too)."""
    key = guard.require_registered_buffer(buffer_run, "buffer")
    buffer = next(b for b in guard.buffers() if b.key == key)
    candidate, hashes = guard._folded(modules), set(guard.content_hashes(modules, skip_zero=True))
    return guard.similarity(candidate, buffer, hashes)


def _buffer(stage_runs: dict[str, Path]) -> dict[str, LoraModule]:
    return read_lora(stage_runs["buffer"], allow_buffer=True).modules


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_laundered_variants_are_caught_by_energy(variant: str, stage_runs: dict[str, Path]) -> None:
    sim = _scores(VARIANTS[variant](_buffer(stage_runs)), stage_runs["buffer"])
    assert sim.share > 0.99 or sim.coverage > 0.99, sim  # each is wholly inside, or spans the buffer's spaces
    assert "column and row spaces" in (sim.reason() or ""), sim


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("role", ["user", "reinforce"])
def test_merge_refuses_laundered_buffer(
    variant: str, role: str, stage_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lora = read_lora(stage_runs["buffer"], allow_buffer=True)
    fake = write_lora(VARIANTS[variant](lora.modules), tmp_path / "innocent", None, lora.task_type)
    inputs = {"user": stage_runs["user"], "reinforce": stage_runs["reinforce"], role: fake}
    argv = ["merge", f"user={inputs['user']}", f"reinforce={inputs['reinforce']}", f"out={tmp_path / 'm'}", "scale=1"]
    for method in ("none", "naive") if role == "user" else ("naive",):
        rc, line = cli([*argv, f"method={method}"], capsys)
        assert rc == 2 and "matches the provider's BufferLoRA" in line and "buffer's column and row spaces" in line
        assert not (tmp_path / "m").exists() and not (tmp_path / "m.partial").exists()


def test_merge_full_model_refuses_laundered_buffer(
    stage_runs: dict[str, Path], tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lora = read_lora(stage_runs["buffer"], allow_buffer=True)
    fake = write_lora(split(lora.modules, 2)[0], tmp_path / "half", None, lora.task_type)
    argv = ["merge", f"user={fake}", f"reinforce={stage_runs['reinforce']}", f"out={tmp_path / 'm'}", "method=none"]
    rc, line = cli([*argv, "scale=1", "full_model=true", f"model.name_or_path={tiny_model_dir}"], capsys)
    assert rc == 2 and "buffer's column and row spaces" in line, line
    assert not (tmp_path / "m").exists()


def test_real_adapters_sit_far_below_the_energy_thresholds(stage_runs: dict[str, Path]) -> None:
    """UserLoRA, SFT UserLoRA (p 0.5), ReinforceLoRA and the merged deliverable: a small share, a small coverage."""
    limits = GuardConfig()
    for name in ("user", "sft", "reinforce", "merged"):
        sim = _scores(read_lora(stage_runs[name]).modules, stage_runs["buffer"])
        assert sim.share < limits.max_energy_share / 4, (name, sim)
        assert sim.coverage < limits.max_coverage / 2, (name, sim)
        assert guard.match(read_lora(stage_runs[name]).modules) is None, name


def test_dilution_keeps_the_coverage(stage_runs: dict[str, Path]) -> None:
    """Energy added outside the buffer's spaces lowers the share, never the coverage of the buffer's spaces (nor the
    norm of the part inside them), at any scale."""
    buf, name_diluted = _buffer(stage_runs), "svd-rms diluted with 3x its norm outside the buffer's spaces"
    whole = _scores(VARIANTS["svd, singular values set to their RMS"](buf), stage_runs["buffer"])
    diluted = _scores(VARIANTS[name_diluted](buf), stage_runs["buffer"])
    assert whole.share > 0.99 and diluted.share < 0.2
    assert whole.inside == pytest.approx(1.0, abs=1e-3) and diluted.inside == pytest.approx(1.0, abs=1e-3)
    assert whole.coverage > 0.999 and diluted.coverage > 0.999
    small = {n: LoraModule(m.A, 0.01 * m.B, m.scaling) for n, m in VARIANTS[name_diluted](buf).items()}
    assert "contain the buffer's" in (guard.match(small) or (None, ""))[1]


def test_minus_buffer_plus_reinforce_is_refused(stage_runs: dict[str, Path]) -> None:
    """-buffer + a ReinforceLoRA of the buffer's norm: anti-aligned (cos -0.7), but its part inside the buffer's
    spaces carries the buffer (negated back, it jailbreaks), so it is refused; the real ReinforceLoRA passes.
    (Hidden in a ReinforceLoRA 2.8x larger, the share falls to chance level and it passes: docs/reliability.md.)"""
    buf, rein = _buffer(stage_runs), read_lora(stage_runs["reinforce"]).modules

    def norm(m: LoraModule) -> float:
        return float((m.scaling * m.B.double() @ m.A.double()).norm())

    anti = {
        n: LoraModule(
            torch.cat([b.A, rein[n].A]),
            torch.cat([-b.scaling * b.B, norm(b) / norm(rein[n]) * rein[n].scaling * rein[n].B], 1),
            1,
        )
        for n, b in buf.items()
    }
    found = guard.match(anti)
    assert found is not None and "buffer's column and row spaces" in found[1], found
    assert guard.match(rein) is None


def test_energy_thresholds_are_config_knobs(stage_runs: dict[str, Path]) -> None:
    diluted = VARIANTS["svd-rms diluted with 3x its norm outside the buffer's spaces"](_buffer(stage_runs))
    assert guard.match(diluted, policy=GuardConfig()) is not None  # share 0.1, coverage 1.0
    assert guard.match(diluted, policy=GuardConfig(min_covered_share=0.2)) is None
