from __future__ import annotations

import pytest

from bnr.data.mix import build_user_mix, harmful_count
from bnr.data.records import Record
from bnr.errors import BnrError

BENIGN = [Record(id=f"b{i}", instruction=f"b{i}", output="ok") for i in range(300)]
HARMFUL = [Record(id=f"h{i}", instruction=f"h{i}", output="bad") for i in range(100)]


@pytest.mark.parametrize(
    ("n", "p", "expected"),
    [
        (1000, 0.1, 100),
        (1000, 0.05, 50),
        (10, 0.25, 3),
        (7, 0.5, 4),
        (100, 0.0, 0),
        (100, 1.0, 100),
        (3, 0.1, 0),
        (1000, 0.001, 1),
    ],
)
def test_exact_harmful_count(n: int, p: float, expected: int) -> None:
    assert harmful_count(n, p) == expected


def test_mix_counts_are_exact_seeded_and_recorded() -> None:
    mix = build_user_mix(BENIGN, HARMFUL, n=200, p=0.1, seed=42)
    harmful = [r for r in mix.records if r.id.startswith("h")]
    assert len(mix.records) == 200 and len(harmful) == 20
    assert mix.manifest["n_harmful"] == 20 and sorted(r.id for r in harmful) == mix.manifest["harmful_ids"]
    assert mix.manifest["ids"] == [r.id for r in mix.records]
    assert build_user_mix(BENIGN, HARMFUL, n=200, p=0.1, seed=42).manifest == mix.manifest
    assert build_user_mix(BENIGN, HARMFUL, n=200, p=0.1, seed=43).manifest["ids"] != mix.manifest["ids"]
    assert len({r.id for r in mix.records}) == 200


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_p_out_of_range(p: float) -> None:
    with pytest.raises(BnrError, match=r"p must be in \[0, 1\]"):
        build_user_mix(BENIGN, HARMFUL, n=10, p=p, seed=0)


def test_n_larger_than_the_data() -> None:
    with pytest.raises(BnrError, match="asked for 200 harmful samples but the dataset has only 100"):
        build_user_mix(BENIGN, HARMFUL, n=400, p=0.5, seed=0)
    with pytest.raises(BnrError, match="benign"):
        build_user_mix(BENIGN, HARMFUL, n=1000, p=0.0, seed=0)
