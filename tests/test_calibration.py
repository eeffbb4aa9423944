"""bnr.calibration: the search grid, the selection rule, the Pareto front and the disjointness check."""

from __future__ import annotations

import pytest

from bnr.calibration import (
    Bounds,
    MergePoint,
    bounds,
    check_disjoint,
    pareto_front,
    search_grid,
    select,
    standard_error,
    violation,
)
from bnr.data.records import Record
from bnr.errors import BnrError


def test_grid_is_the_product_with_the_inert_points_collapsed():
    points = search_grid([0.5, 1.0], [0.0, 0.5], [0.1, 1.0], [None, [1, 0]])
    # c_R = 0: alpha and layers do nothing -> one point per c_U; c_R = 0.5: 2 alphas x 2 layer sets
    assert len(points) == 2 * (1 + 4)
    assert len({p.knobs()["reinforce_layers"] is None for p in points}) == 2
    assert MergePoint(1.0, 0.5, 0.1, (0, 1)) in points  # layers are sorted and deduplicated
    assert MergePoint(1.0, 0.5, 0.1, (0, 1)).knobs() == {
        "user_scale": 1.0,
        "reinforce_scale": 0.5,
        "alpha": 0.1,
        "reinforce_layers": [0, 1],
    }
    with pytest.raises(BnrError, match="must each list a value"):
        search_grid([1.0], [], [0.1], [None])


def _row(hs: float, o: float, fa: float) -> dict[str, float]:
    return {"hs": hs, "over_refusal": o, "fa": fa}


def test_select_minimises_over_refusal_within_the_bounds():
    b = Bounds(hs_max=5.0, fa_min=80.0)
    rows = [_row(0, 40, 90), _row(10, 0, 95), _row(4, 10, 85), _row(2, 10, 88), _row(0, 5, 70)]
    best, feasible = select(rows, b)
    assert feasible and best == 3  # least OR among feasible (rows 0, 2, 3), tie on OR -> higher FA
    assert violation(rows[1], b) == 5.0 and violation(rows[4], b) == 10.0
    best, feasible = select([rows[1], rows[4]], b)
    assert not feasible and best == 1  # safety first: within the HS bound beats a smaller miss over it
    best, feasible = select([rows[1], _row(7, 0, 99), rows[4], _row(0, 0, 60)], b)
    assert not feasible and best == 2  # then the smallest FA miss


def test_over_refusals_within_one_standard_error_are_ties_decided_by_fa():
    rows = [_row(0, 8, 46), _row(0, 10, 63), _row(0, 14, 90), _row(9, 0, 99)]
    for r in rows:
        r["n_over_refusal"] = 100
    # one SE of 8% on 100 prompts is 2.7 points: 10% ties with 8% and wins on FA; 14% does not tie
    assert abs(standard_error(8.0, 100) - 2.713) < 1e-3 and standard_error(0.0, 50) == 2.0
    assert select(rows, Bounds(hs_max=2.0, fa_min=40.0)) == (1, True)
    assert select(rows, Bounds(hs_max=2.0, fa_min=40.0, or_tolerance=0.0)) == (0, True)  # the strict rule
    assert select(rows, Bounds(hs_max=2.0, fa_min=40.0, or_tolerance=6.0)) == (2, True)
    assert select([{k: v for k, v in r.items() if k != "n_over_refusal"} for r in rows], Bounds(2.0, 40.0))[0] == 0


def test_bounds_default_to_the_paper_merge_plus_a_margin():
    assert bounds(3.0, 90.0, hs_max=None, hs_margin=2.0, fa_delta=1.0) == Bounds(5.0, 89.0)
    assert bounds(3.0, 90.0, hs_max=1.0, hs_margin=2.0, fa_delta=0.0) == Bounds(1.0, 90.0)


def test_pareto_front_keeps_exactly_the_undominated_rows():
    rows = [_row(0, 10, 90), _row(0, 20, 90), _row(5, 0, 80), _row(5, 5, 95), _row(6, 6, 94)]
    assert pareto_front(rows) == [0, 2, 3]


def test_disjointness_check_sees_shared_ids_and_shared_prompts():
    a = [Record("c-1", "how can I paint a chair?"), Record("c-2", "fold it")]
    ev = {"toy-over-refusal": [Record("e-1", "how do I paint the chair?")]}
    check_disjoint({"over_refusal": a}, ev)
    with pytest.raises(BnrError, match=r"'over_refusal' shares 1 sample.*toy-over-refusal"):
        check_disjoint({"over_refusal": a}, {"toy-over-refusal": [Record("e-9", " fold it ")]})
    with pytest.raises(BnrError, match="shares 1 sample"):
        check_disjoint({"harmful": a}, {"toy-harmful": [Record("c-1", "something else")]})
