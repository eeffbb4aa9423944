"""Tests for bnr.merge: factor-space QR merge == dense float64 reference, merging adapter folders, round trips.

Reading and writing adapter folders is tested in tests/test_lora_files.py, whose folder helpers are reused here.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import Tensor

from bnr.errors import BnrError
from bnr.lora_files import LoraModule, read_lora
from bnr.merge import (
    MERGE_METHODS,
    MergeResult,
    diagnostics_json,
    layer_index,
    merge_adapters,
    merged_into,
    qr_merge_factors,
    write_full_model,
    write_merged_adapter,
)
from test_lora_files import D_IN, make_tiny_adapters, random_mods, tiny_llama, write_adapter

# ---------------------------------------------------------------- dense reference


def dense_reference(
    A_u: Tensor,
    B_u: Tensor,
    s_u: float,
    A_r: Tensor,
    B_r: Tensor,
    s_r: float,
    *,
    alpha: float = 0.1,
    tau: float = 0.01,
    scale: float = 0.5,
    user_scale: float | None = None,
    reinforce_scale: float | None = None,
) -> Tensor:
    """METHOD.md literally, in float64 with dense d_out x d_out and d_out x d_in matrices, with the decoupled
    strengths W = W0 + c_U dU + c_R (I - alpha Q Q^T) dR (None: c = scale, the paper's merge)."""
    A_u, B_u, A_r, B_r = (t.double() for t in (A_u, B_u, A_r, B_r))
    dU, dR = s_u * B_u @ A_u, s_r * B_r @ A_r
    lam, V = torch.linalg.eigh(A_u @ A_u.T)
    keep = lam > tau * lam.max()
    if keep.sum() == 0:
        dR_t = dR
    else:
        B_eff = B_u if keep.all() else B_u @ V[:, keep]
        Q, _ = torch.linalg.qr(B_eff)
        dR_t = (torch.eye(dU.shape[0], dtype=torch.float64) - alpha * Q @ Q.T) @ dR
    c_u = scale if user_scale is None else user_scale
    c_r = scale if reinforce_scale is None else reinforce_scale
    return c_u * dU + c_r * dR_t


def _rel(x: Tensor, ref: Tensor) -> float:
    return float((x.double() - ref).norm() / ref.norm().clamp_min(1e-30))


def _factors(d_out: int, d_in: int, r_u: int, r_r: int, *, user_rank: int | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    A_u = torch.randn(r_u, d_in, generator=g)
    if user_rank is not None:  # rank-collapsed A_u: 0 < |K| < r_u (or |K| = 0 when user_rank = 0)
        A_u = torch.randn(r_u, user_rank, generator=g) @ torch.randn(user_rank, d_in, generator=g)
    B_u = torch.randn(d_out, r_u, generator=g)
    A_r, B_r = torch.randn(r_r, d_in, generator=g), torch.randn(d_out, r_r, generator=g)
    return A_u, B_u, A_r, B_r


CASES = [
    # (d_out, d_in, r_u, r_r, user_rank)
    (16, 12, 4, 4, None),
    (24, 40, 8, 3, None),
    (20, 30, 8, 6, 2),
    (12, 12, 8, 8, 0),
    (6, 20, 8, 4, None),  # r_u > d_out: Q spans everything
]


@pytest.mark.parametrize(("d_out", "d_in", "r_u", "r_r", "user_rank"), CASES)
@pytest.mark.parametrize("alpha", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_factor_merge_matches_dense_reference(d_out, d_in, r_u, r_r, user_rank, alpha, scale):
    A_u, B_u, A_r, B_r = _factors(d_out, d_in, r_u, r_r, user_rank=user_rank)
    A_m, B_m, diag = qr_merge_factors(A_u, B_u, 2.0, A_r, B_r, 0.5, alpha=alpha, tau=0.01, scale=scale)
    ref = dense_reference(A_u, B_u, 2.0, A_r, B_r, 0.5, alpha=alpha, tau=0.01, scale=scale)
    assert A_m.dtype == A_u.dtype and A_m.shape == (r_u + r_r, d_in) and B_m.shape == (d_out, r_u + r_r)
    # float32 outputs of a float64 computation
    assert _rel(B_m.double() @ A_m.double(), ref) < 1e-6
    lam = torch.linalg.eigvalsh((A_u @ A_u.T).double())
    expected_k = int((lam > 0.01 * lam.max()).sum()) if user_rank is None else user_rank
    assert diag["effective_rank"] == expected_k
    assert (diag["r_user"], diag["r_reinforce"]) == (r_u, r_r)


@pytest.mark.parametrize(("d_out", "d_in", "r_u", "r_r", "user_rank"), CASES)
@pytest.mark.parametrize(("user_scale", "reinforce_scale"), [(1.0, 0.25), (0.75, 2.0), (1.0, 0.0), (None, 1.5)])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_decoupled_strengths_match_dense_reference(
    d_out, d_in, r_u, r_r, user_rank, user_scale, reinforce_scale, alpha
):
    A_u, B_u, A_r, B_r = (t.double() for t in _factors(d_out, d_in, r_u, r_r, user_rank=user_rank, seed=7))
    knobs = {"alpha": alpha, "scale": 0.5, "user_scale": user_scale, "reinforce_scale": reinforce_scale}
    A_m, B_m, _ = qr_merge_factors(A_u, B_u, 2.0, A_r, B_r, 0.5, **knobs)
    assert A_m.shape == (r_u + r_r, d_in) and B_m.shape == (d_out, r_u + r_r)  # still a LoRA of rank r_U + r_R
    assert _rel(B_m @ A_m, dense_reference(A_u, B_u, 2.0, A_r, B_r, 0.5, **knobs)) < 1e-12


def test_scale_is_the_shorthand_for_equal_strengths():
    A_u, B_u, A_r, B_r = _factors(16, 12, 4, 4, seed=8)
    paper = qr_merge_factors(A_u, B_u, 2.0, A_r, B_r, 2.0, alpha=0.1, scale=0.5)
    explicit = qr_merge_factors(
        A_u, B_u, 2.0, A_r, B_r, 2.0, alpha=0.1, scale=0.9, user_scale=0.5, reinforce_scale=0.5
    )
    torch.testing.assert_close(paper[1], explicit[1], rtol=0, atol=0)
    torch.testing.assert_close(paper[0], explicit[0], rtol=0, atol=0)


@pytest.mark.parametrize(("user_scale", "reinforce_scale"), [(-1.0, 0.5), (0.5, -0.1), (float("nan"), 0.5)])
def test_bad_strengths_are_refused(user_scale, reinforce_scale):
    A_u, B_u, A_r, B_r = _factors(8, 8, 2, 2)
    with pytest.raises(BnrError, match=r"merge (user|reinforce)_scale"):
        qr_merge_factors(A_u, B_u, 1.0, A_r, B_r, 1.0, user_scale=user_scale, reinforce_scale=reinforce_scale)


def test_float64_inputs_match_tightly():
    A_u, B_u, A_r, B_r = (t.double() for t in _factors(16, 12, 8, 4, user_rank=3, seed=1))
    A_m, B_m, _ = qr_merge_factors(A_u, B_u, 1.5, A_r, B_r, 3.0, alpha=0.7, scale=0.5)
    assert A_m.dtype == torch.float64
    assert _rel(B_m @ A_m, dense_reference(A_u, B_u, 1.5, A_r, B_r, 3.0, alpha=0.7, scale=0.5)) < 1e-12


@pytest.mark.parametrize("cond", [1.0, 1e2, 1e5, math.inf])
def test_ill_conditioned_user_B_matches_dense(cond):
    """Well-conditioned B_eff takes the normal-equations projector, ill-conditioned or rank-deficient the QR one."""
    A_u, B_u, A_r, B_r = (t.double() for t in _factors(40, 30, 6, 5, seed=2))
    U, _, Vh = torch.linalg.svd(B_u, full_matrices=False)
    sv = torch.logspace(0, -5, 6, dtype=torch.float64) if cond == 1e5 else torch.ones(6, dtype=torch.float64)
    if cond == 1e2:
        sv = torch.logspace(0, -2, 6, dtype=torch.float64)
    B_u = U @ torch.diag(sv) @ Vh
    if cond == math.inf:
        B_u[:, 1] = B_u[:, 0]  # rank-deficient: QR's Q still has 6 columns
    _, B_m, diag = qr_merge_factors(A_u, B_u, 2.0, A_r, B_r, 0.5, alpha=0.7, scale=0.5)
    ref = dense_reference(A_u, B_u, 2.0, A_r, B_r, 0.5, alpha=0.7, scale=0.5)
    assert _rel(B_m @ torch.cat([A_u, A_r]), ref) < 1e-9
    dR = 0.5 * B_r @ A_r
    assert diag["norm_dR_tilde"] == pytest.approx(float((2 * ref - 2.0 * B_u @ A_u).norm()), rel=1e-9)
    assert diag["norm_dR"] == pytest.approx(float(dR.norm()), rel=1e-12)


def test_factor_space_norms_match_dense():
    A_u, B_u, A_r, B_r = (t.double() for t in _factors(20, 16, 8, 4, user_rank=3, seed=2))
    s_u, s_r, alpha = 2.0, 0.5, 0.6
    _, B_m, diag = qr_merge_factors(A_u, B_u, s_u, A_r, B_r, s_r, alpha=alpha, scale=1.0)
    dU, dR = s_u * B_u @ A_u, s_r * B_r @ A_r
    dR_t = B_m[:, 8:] @ A_r
    assert diag["norm_dU"] == pytest.approx(float(dU.norm()), rel=1e-9)
    assert diag["norm_dR"] == pytest.approx(float(dR.norm()), rel=1e-9)
    assert diag["norm_dR_tilde"] == pytest.approx(float(dR_t.norm()), rel=1e-9)
    assert diag["removed_fraction"] == pytest.approx(float((dR - dR_t).norm() / dR.norm()), rel=1e-9)
    assert 0.0 < diag["removed_fraction"] <= alpha + 1e-12


def test_alpha_one_removes_dR_inside_user_subspace():
    A_u, B_u, A_r, B_r = (t.double() for t in _factors(24, 16, 8, 4, user_rank=3, seed=3))
    _, B_m, diag = qr_merge_factors(A_u, B_u, 2.0, A_r, B_r, 2.0, alpha=1.0, scale=0.5)
    assert diag["effective_rank"] == 3
    _, V = torch.linalg.eigh(A_u @ A_u.T)
    Q, _ = torch.linalg.qr(B_u @ V[:, -3:])
    dR_t = B_m[:, 8:] @ A_r
    assert float((Q.T @ dR_t).norm()) < 1e-10 * float(dR_t.norm())


def test_empty_K_means_no_projection():
    A_u, B_u, A_r, B_r = _factors(12, 10, 4, 4, seed=4)
    A_u = torch.zeros_like(A_u)
    _, B_m, diag = qr_merge_factors(A_u, B_u, 2.0, A_r, B_r, 2.0, alpha=1.0, scale=1.0)
    assert diag["effective_rank"] == 0 and diag["removed_fraction"] == 0.0
    torch.testing.assert_close(B_m[:, 4:], 2.0 * B_r)


def test_naive_is_plain_scaled_sum_and_none_is_user_only():
    A_u, B_u, A_r, B_r = (t.double() for t in _factors(16, 12, 4, 6, seed=5))
    A_m, B_m, _ = MERGE_METHODS.get("naive").combine(A_u, B_u, 2.0, A_r, B_r, 0.5, alpha=1.0, tau=0.01, scale=0.5)
    torch.testing.assert_close(B_m @ A_m, 0.5 * (2.0 * B_u @ A_u + 0.5 * B_r @ A_r))
    A_m, B_m, diag = MERGE_METHODS.get("none").combine(A_u, B_u, 2.0, A_r, B_r, 0.5, alpha=1.0, tau=0.01, scale=0.5)
    torch.testing.assert_close(B_m @ A_m, 0.5 * (2.0 * B_u @ A_u))
    assert diag["removed_fraction"] == 1.0
    assert set(MERGE_METHODS.names()) >= {"qr", "naive", "none"}


@pytest.mark.parametrize(
    ("alpha", "tau", "scale"), [(-0.1, 0.01, 0.5), (1.5, 0.01, 0.5), (0.1, 1.0, 0.5), (0.1, 0.01, 0)]
)
def test_bad_knobs_are_refused(alpha, tau, scale):
    A_u, B_u, A_r, B_r = _factors(8, 8, 2, 2)
    with pytest.raises(BnrError, match=r"merge (alpha|tau|scale)"):
        qr_merge_factors(A_u, B_u, 1.0, A_r, B_r, 1.0, alpha=alpha, tau=tau, scale=scale)


# ---------------------------------------------------------------- merging adapter folders (no model needed)


def test_modules_present_in_one_adapter_only(tmp_path, caplog):
    u = write_adapter(tmp_path / "u", random_mods(["l.0.q", "l.0.up"], 4, seed=1))
    r = write_adapter(tmp_path / "r", random_mods(["l.0.q", "l.0.down"], 2, seed=2))
    res = merge_adapters(u, r, alpha=0.3, scale=0.5)
    uf, rf = read_lora(u), read_lora(r)
    assert set(res.modules) == {"l.0.q", "l.0.up", "l.0.down"}
    up, down = uf.modules["l.0.up"], rf.modules["l.0.down"]
    torch.testing.assert_close(res.modules["l.0.up"].B @ res.modules["l.0.up"].A, 0.5 * 2.0 * up.B @ up.A)
    torch.testing.assert_close(res.modules["l.0.down"].B @ res.modules["l.0.down"].A, 0.5 * 2.0 * down.B @ down.A)
    q_u, q_r = uf.modules["l.0.q"], rf.modules["l.0.q"]
    ref = dense_reference(q_u.A, q_u.B, 2.0, q_r.A, q_r.B, 2.0, alpha=0.3, scale=0.5)
    assert _rel(res.modules["l.0.q"].B @ res.modules["l.0.q"].A, ref) < 1e-6
    assert res.summary["user_only"] == ["l.0.up"] and res.summary["reinforce_only"] == ["l.0.down"]
    assert "only in UserLoRA" in caplog.text
    diag = json.loads(json.dumps(diagnostics_json(res)))
    assert diag["modules"]["l.0.down"]["presence"] == "reinforce_only"
    assert set(diag["summary"]["inputs"]) == {"user", "reinforce"}
    none = merge_adapters(u, r, method="none")
    assert set(none.modules) == {"l.0.q", "l.0.up"}


def test_layer_index_is_the_first_integer_component():
    assert layer_index("model.layers.3.self_attn.q_proj") == 3
    assert layer_index("transformer.h.11.mlp.c_fc") == 11
    assert layer_index("lm_head") is None


def test_reinforce_layers_restrict_dR_to_those_layers(tmp_path):
    names = ["model.layers.0.q", "model.layers.1.q", "model.layers.2.q", "model.layers.2.up"]
    u = write_adapter(tmp_path / "u", random_mods(names, 4, seed=1))
    r = write_adapter(tmp_path / "r", random_mods([*names, "model.layers.1.down"], 2, seed=2))
    res = merge_adapters(u, r, alpha=0.3, scale=0.5, user_scale=1.0, reinforce_scale=0.8, reinforce_layers=[0, 2])
    uf, rf = read_lora(u), read_lora(r)
    for name in names:
        um, rm = uf.modules[name], rf.modules[name]
        got = res.modules[name].B.double() @ res.modules[name].A.double()
        if ".1." in name:  # outside the range: UserLoRA alone, at its strength
            ref = 1.0 * um.scaling * um.B.double() @ um.A.double()
            assert res.modules[name].rank == um.rank and res.diagnostics[name]["outside_reinforce_layers"]
        else:
            knobs = {"alpha": 0.3, "user_scale": 1.0, "reinforce_scale": 0.8}
            ref = dense_reference(um.A, um.B, um.scaling, rm.A, rm.B, rm.scaling, **knobs)
            assert res.modules[name].rank == um.rank + rm.rank
        assert _rel(got, ref) < 1e-6
    assert "model.layers.1.down" not in res.modules  # a reinforce-only module outside the range is dropped
    assert res.summary["outside_reinforce_layers"] == ["model.layers.1.q"]
    assert res.summary["reinforce_layers"] == [0, 2] and res.summary["strengths"] == {"user": 1.0, "reinforce": 0.8}
    everything = merge_adapters(u, r, alpha=0.3, user_scale=1.0, reinforce_scale=0.8)
    assert everything.summary["outside_reinforce_layers"] == [] and "model.layers.1.down" in everything.modules
    with pytest.raises(BnrError, match=r"reinforce_layers=.*matches no ReinforceLoRA module"):
        merge_adapters(u, r, reinforce_layers=[7])


def test_errors_shape_mismatch_disjoint_base_and_bad_alpha(tmp_path):
    u = write_adapter(tmp_path / "u", random_mods(["a", "b"], 4, seed=1))
    wide = write_adapter(tmp_path / "wide", random_mods(["a"], 2, seed=2, d_in=D_IN + 1))
    with pytest.raises(BnrError, match="module 'a' has shape"):
        merge_adapters(u, wide)
    other = write_adapter(tmp_path / "other", random_mods(["c"], 2, seed=3))
    with pytest.raises(BnrError, match="no module in common"):
        merge_adapters(u, other)
    base2 = write_adapter(tmp_path / "base2", random_mods(["a"], 2, seed=4), base_model_name_or_path="other-model")
    with pytest.raises(BnrError, match="allow_base_mismatch"):
        merge_adapters(u, base2)
    assert "a" in merge_adapters(u, base2, allow_base_mismatch=True).modules
    with pytest.raises(BnrError, match="alpha"):
        merge_adapters(u, base2, alpha=2.0, allow_base_mismatch=True)
    with pytest.raises(BnrError, match="unknown merge method"):
        merge_adapters(u, base2, method="ties", allow_base_mismatch=True)


def test_buffer_run_is_refused(tmp_path):
    buf = write_adapter(tmp_path / "buffer", random_mods(["a"], 4, seed=1))
    (buf / "manifest.json").write_text(json.dumps({"stage": "buffer", "status": "complete"}))
    r = write_adapter(tmp_path / "r", random_mods(["a"], 4, seed=2))
    with pytest.raises(BnrError, match="BufferLoRA"):
        merge_adapters(buf, r)
    with pytest.raises(BnrError, match="BufferLoRA"):
        merge_adapters(r, buf)


# ---------------------------------------------------------------- round trip on a tiny Llama


@pytest.fixture(scope="module")
def tiny_adapters(tmp_path_factory):
    return make_tiny_adapters(tmp_path_factory.mktemp("tiny"))


def _reference_model(user: dict[str, LoraModule], reinforce: dict[str, LoraModule], alpha: float, scale: float):
    model = tiny_llama()
    with torch.no_grad():
        for name in set(user) | set(reinforce):
            w = model.get_submodule(name).weight
            u, r = user.get(name), reinforce.get(name)
            if u is not None and r is not None:
                delta = dense_reference(u.A, u.B, u.scaling, r.A, r.B, r.scaling, alpha=alpha, scale=scale)
            else:
                m = u if u is not None else r
                assert m is not None
                delta = scale * m.scaling * m.B.double() @ m.A.double()
            w.copy_((w.double() + delta).float())
    return model


def test_round_trip_adapter_and_full_model(tiny_adapters, tmp_path):
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    root, user, reinforce = tiny_adapters
    alpha, scale = 0.5, 0.5
    result = merge_adapters(root / "user", root / "reinforce", alpha=alpha, scale=scale)
    assert isinstance(result, MergeResult) and result.summary["n_common"] == 4
    out = write_merged_adapter(result, tmp_path / "merged", result.base_model_name_or_path)
    ids = torch.randint(0, 101, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        peft_model = PeftModel.from_pretrained(tiny_llama(), str(out)).eval()
        got = peft_model(input_ids=ids).logits
        want = _reference_model(user, reinforce, alpha, scale)(input_ids=ids).logits
        base = tiny_llama()(input_ids=ids).logits
    for name, m in result.modules.items():
        layer = peft_model.base_model.model.get_submodule(name)
        assert layer.r["default"] == m.rank and layer.scaling["default"] == 1.0
    assert float((want - base).abs().max()) > 1e-2  # the delta matters
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)

    full = write_full_model(tiny_llama(), result, tmp_path / "full")
    with torch.no_grad():
        reloaded = LlamaForCausalLM.from_pretrained(str(tmp_path / "full")).eval()(input_ids=ids).logits
        in_memory = full(input_ids=ids).logits
    torch.testing.assert_close(reloaded, got, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(in_memory, reloaded)


def test_merged_into_matches_full_model_and_restores_weights(tiny_adapters, tmp_path):
    root, _, _ = tiny_adapters
    result = merge_adapters(root / "user", root / "reinforce", alpha=0.3, user_scale=1.0, reinforce_scale=0.7)
    model = tiny_llama().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 101, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        with merged_into(model, result):
            inside = model(input_ids=ids).logits
        want = write_full_model(tiny_llama(), result, tmp_path / "full")(input_ids=ids).logits
    torch.testing.assert_close(inside, want, rtol=0, atol=0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # bit for bit


def test_full_model_refuses_wrong_base(tiny_adapters, tmp_path):
    root, _, _ = tiny_adapters
    result = merge_adapters(root / "user", root / "reinforce")
    bad = copy.deepcopy(result)
    bad.modules = {"model.layers.9.self_attn.q_proj": next(iter(result.modules.values()))}
    with pytest.raises(BnrError, match="no module"):
        write_full_model(tiny_llama(), bad, tmp_path / "bad")


@pytest.mark.parametrize("block", [1, 7, 1 << 16])
def test_dense_delta_by_blocks_is_the_float64_sum_rounded_once(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    """write_full_model / merged_into add B A block of rows by block: the same bits as one dense float64 delta."""
    import bnr.merge as merge

    g = torch.Generator().manual_seed(3)
    weight = torch.randn(13, 5, generator=g)
    m = LoraModule(A=torch.randn(3, 5, generator=g), B=torch.randn(13, 3, generator=g), scaling=1.0)
    want = (weight.double() + m.B.double() @ m.A.double()).float()
    monkeypatch.setattr(merge, "_DELTA_BLOCK", block)
    got = weight.clone()
    merge.add_delta(got, m)
    assert torch.equal(got, want)
