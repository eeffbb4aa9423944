"""The attack presets: the issue's grids, every benchmark they name builds, the search section is the stated budget."""

from __future__ import annotations

import bnr.attacks  # noqa: F401  (the attack check runs at config load)
from bnr.attacks import ATTACKS
from bnr.config import load_config
from bnr.orchestrate.grid import grid

DATA_ATTACKS = ["harmful-mix", "jailbreak-tune", "backdoor-tune", "identity-shift", "benign-only", "harmful-shift"]


def test_toy_attacks_is_every_defense_x_every_data_attack_at_p_0_1_and_3_seeds() -> None:
    from bnr.defenses import canonical_name
    from bnr.eval.protocols import PROTOCOLS
    from bnr.recipes.evaluate import build_benchmarks

    cfg = load_config("toy-attacks")
    assert sorted(cfg.sweep.axes["user.attack"]) == sorted(ATTACKS.names()) == sorted(DATA_ATTACKS)
    cells = grid(cfg)
    defenses = {canonical_name(d) for d in load_config("toy-defenses").sweep.defenses}  # every defense of that table
    assert {c.defense for c in cells} == defenses
    assert {c.p for c in cells} == {0.1} and {c.seed for c in cells} == {42, 30, 50}
    assert len(cells) == (len(defenses) + 1) * 6 * 3  # safelora at two thresholds
    names = [b.name for b in build_benchmarks(PROTOCOLS.get(cfg.eval.protocol), cfg.eval)]
    assert names[:3] == ["harmful", "over-refusal", "sst2"] and len(names) == 9
    s = cfg.attack_search
    assert s.defenses == ["sft", "bnr"] and s.trials == 8


def test_smollm2_attacks_is_the_issue_grid() -> None:
    cfg = load_config("smollm2-attacks")
    cells = grid(cfg)
    assert {c.defense for c in cells} == {"sft", "bnr", "bnr-buffer-only", "lisa", "safelora", "antidote"}
    assert len(cells) == 6 * 6 * 3 and {c.p for c in cells} == {0.1}
    assert {dict(c.extra)["user.attack"] for c in cells} == set(DATA_ATTACKS)
    framed = [b for b in cfg.eval.benchmarks if b.startswith("harmful-")]
    assert len(framed) == 6 and all(cfg.eval.options[b] == cfg.eval.options["harmful"] for b in framed)
    assert cfg.attacks["harmful-shift"]["answer_format"] == "numbered"
    assert cfg.attack_search.defenses == ["sft", "bnr"] and cfg.attack_search.trials == 12
