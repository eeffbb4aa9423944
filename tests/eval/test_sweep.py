"""`bnr sweep`: 2 defenses x 2 p x 2 seeds on the tiny model, killed half-way, resumed without redoing cells."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from bnr.artifacts import MANIFEST, is_complete, path_from
from bnr.cli import main
from bnr.config import load_config
from bnr.errors import BnrError
from conftest import tiny_overrides


@pytest.fixture(scope="module")
def provider_runs(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("provider")
    over = tiny_overrides(tiny_model_dir, tiny_data, root)
    assert main(["train-buffer", *over, f"buffer.out={root / 'buffer'}"]) == 0
    assert (
        main(["train-reinforce", *over, f"reinforce.buffer={root / 'buffer'}", f"reinforce.out={root / 'reinforce'}"])
        == 0
    )
    return root


def _sweep_args(tiny_model_dir: Path, tiny_data: dict[str, Path], provider: Path, out: Path) -> list[str]:
    from bnr.data.sources import SST2_INSTRUCTION

    sst2 = out.parent / "sst2.jsonl"
    sst2.write_text(
        "".join(
            json.dumps({"id": f"s{i}", "instruction": SST2_INSTRUCTION, "input": t, "output": lab}) + "\n"
            for i, (t, lab) in enumerate([("great movie", "positive"), ("say", "negative")])
        )
    )
    return [
        *tiny_overrides(tiny_model_dir, tiny_data, out.parent / "unused"),
        "model.device=cpu",
        f"user.buffer={provider / 'buffer'}",
        f"merge.reinforce={provider / 'reinforce'}",
        "sweep.providers=given",
        f"sweep.out={out}",
        "sweep.defenses=[none,bnr]",
        "sweep.p=[0,0.5]",
        "sweep.seeds=[1,2]",
        "sweep.n=[12]",
        "eval.protocol=booster-2024",
        "eval.judges=keyword",
        "eval.benchmarks=harmful,over-refusal,sst2",
        f"eval.data.harmful.path={tiny_data['harmful']}",
        f"eval.data.over-refusal.path={tiny_data['benign']}",
        f"eval.data.sst2.path={sst2}",
        "eval.limit=3",
        "eval.max_new_tokens=3",
        "eval.progress=false",
        f"eval.cache={out.parent / 'cache'}",
        "user.train.progress=false",
    ]


def test_sweep_killed_half_way_resumes_without_redoing_cells(
    tiny_model_dir: Path,
    tiny_data: dict[str, Path],
    provider_runs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bnr.orchestrate import grid, userjob
    from bnr.recipes import sweep

    out = tmp_path / "sweep"
    cfg = load_config(None, _sweep_args(tiny_model_dir, tiny_data, provider_runs, out))
    cells = sweep.grid(cfg)
    assert len(cells) == 8

    calls: dict[str, int] = {"finetune": 0}
    real_finetune = userjob.train_user

    def counting_finetune(job: Any) -> Path:
        calls["finetune"] += 1
        return real_finetune(job)

    monkeypatch.setattr(userjob, "train_user", counting_finetune)
    # stage 1: a limit of 3 new cells, then the sweep stops
    sweep.run(load_config(None, [*_sweep_args(tiny_model_dir, tiny_data, provider_runs, out), "sweep.max_cells=3"]))
    done = [c for c in cells if is_complete(sweep.cell_config(cfg, c).eval.out)]
    assert len(done) == 3 and calls["finetune"] == 3
    stamps = {c.name: (Path(sweep.cell_config(cfg, c).eval.out) / MANIFEST).read_text() for c in done}
    assert json.loads((out / "sweep.json").read_text())["finished"] == 3

    # stage 2: killed during the 4th cell's evaluation (after its fine-tuning finished)
    real_eval = grid.evaluate_run

    def killed(*a: Any, **k: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(grid, "evaluate_run", killed)
    with pytest.raises(KeyboardInterrupt):
        sweep.run(cfg)
    assert calls["finetune"] == 4
    fourth = sweep.cell_config(cfg, cells[3])
    user = sweep.read_cell(Path(fourth.eval.out).parent)["user"]
    assert is_complete(user) and not is_complete(fourth.eval.out)

    # stage 3: resumed to the end; finished cells and the 4th cell's fine-tuning are not redone; the report hook
    # adds the columns it names (a registered one, a judge's HS, any benchmark metric), with the axes of cell.json
    monkeypatch.setattr(grid, "evaluate_run", real_eval)
    report = (
        "sweep.report={HS: hs, HS keyword: 'judge:keyword', refused: 'over-refusal.refusal_rate', R: task_refused}"
    )
    assert main(["sweep", *_sweep_args(tiny_model_dir, tiny_data, provider_runs, out), report]) == 0
    assert calls["finetune"] == 8
    for name, text in stamps.items():
        cell = next(c for c in cells if c.name == name)
        assert (Path(sweep.cell_config(cfg, cell).eval.out) / MANIFEST).read_text() == text

    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {r["defense"] for r in rows} == {"none", "bnr"}
    assert all({"hs", "hs_plus", "over_refusal", "fa"} <= set(r) for r in rows)
    table = (out / "table.md").read_text()
    assert "HS\u2193 p=0.5" in table and "OR\u2193 p=0" in table and "FA\u2191 p=0.5" in table
    assert table.index("HS\u2193 p=0 ") < table.index("OR\u2193 p=0 ") < table.index("FA\u2191 p=0 ")
    assert "| bnr |" in table and "| none |" in table
    assert "[95% bootstrap CI over prompts and seeds]" in table and re.search(
        r"\| \d+\.\d \u00b1 \d+\.\d \[\d+\.\d, ", table
    )
    assert all(r["train_s"] > 0 for r in rows) and "user job s p=0.5" in table  # the cost column
    assert "\\begin{tabular}" in (out / "table.tex").read_text()
    for png in ("hs_vs_p.png", "fa_vs_p.png", "over_refusal_vs_p.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "sweep.json").read_text())["pending"] == []
    info = json.loads((Path(fourth.eval.out).parent / "cell.json").read_text())
    assert info["axes"] == {
        "user.defense": cells[3].defense,
        "user.p": cells[3].p,
        "user.n": 12,
        "seed": cells[3].seed,
    }
    lines = (out / "report.md").read_text().splitlines()
    head = "| defense | p | n | axes | seeds | HS | HS keyword | refused | R | user training s | eval s |"
    assert head in lines
    for row in rows:  # each group's HS is the mean of its cells' headline HS (results.jsonl)
        group = [r["hs"] for r in rows if (r["defense"], r["p"]) == (row["defense"], row["p"])]
        mean = f"{sum(group) / 2:.1f} \u00b1"
        assert any(x.startswith(f"| {row['defense']} | {row['p']:g} | 12 | - | 1,2 | {mean}") for x in lines), lines
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "cost of the 8 cells:" in "\n".join(lines) and f"| {cells[3].name} |" in "\n".join(lines)
    assert "bnr.recipes.sweep" in sys.modules

    # the files a user reads name no folder of this machine inside the sweep: each cell's cell.json, its eval's
    # manifest and summary hold paths relative to their own folder, which read back to the runs (the manifest's
    # `command` is the command line as typed)
    trees = {str(out), str(out.resolve())}
    for cell in cells:
        folder = Path(sweep.cell_config(cfg, cell).eval.out)
        for f in (folder.parent / "cell.json", folder / MANIFEST, folder / "summary.json"):
            text = json.dumps({k: v for k, v in json.loads(f.read_text()).items() if k != "command"})
            assert not [t for t in trees if t in text], f
        runs = sweep.read_cell(folder.parent)
        assert all(is_complete(run) for run in runs.values())
        target = json.loads((folder / MANIFEST).read_text())["target"]["path"]
        assert path_from(target, folder) == runs["deliverable"]
    # a cell.json of an older bnr (absolute paths) is still read
    (folder.parent / "cell.json").write_text(json.dumps({k: str(v.resolve()) for k, v in runs.items()}))
    assert sweep.cell_row(cfg, cell)["train_s"] == next(r["train_s"] for r in rows if r["cell"] == cell.name)

    # stage 4: a later bnr whose config schema has grown computes other keys, so other folder names, for the same
    # stages; the sweep finds the runs an older schema made and neither retrains nor evaluates anything again
    users = sorted(p for p in (out / "users").iterdir() if is_complete(p))
    assert users
    for run in users:
        record = json.loads((run / "manifest.json").read_text())  # the manifest records the stage key
        del record["key_inputs"]["extra"]["user"]["train"]["grad_accum"]  # as if the field did not exist then
        old_key = "0" * 15 + str(users.index(run))
        (run / "manifest.json").write_text(json.dumps({**record, "key": old_key}))
        run.rename(run.parent / old_key)
    assert main(["sweep", *_sweep_args(tiny_model_dir, tiny_data, provider_runs, out)]) == 0
    assert calls["finetune"] == 8
    assert sorted(p.name for p in (out / "users").iterdir()) == ["0" * 15 + str(i) for i in range(len(users))]
    for name, text in stamps.items():
        cell = next(c for c in cells if c.name == name)
        assert (Path(sweep.cell_config(cfg, cell).eval.out) / MANIFEST).read_text() == text


def test_fa_benchmark_by_registry_or_result_name() -> None:
    import bnr.toy  # noqa: F401  (registers the toy benchmarks)
    from bnr.eval.roles import headline as scores

    results = {
        "harmful": {"metric": "hs", "hs": 10.0},
        "sst2": {"metric": "accuracy", "value": 80.0},
        "agnews": {"metric": "accuracy", "value": 60.0},
    }
    assert scores(results, None)["fa"] == 80.0  # the first task benchmark
    assert scores(results, "toy-agnews")["fa"] == 60.0 == scores(results, "agnews")["fa"]
    with pytest.raises(BnrError, match=r"sweep\.fa_benchmark='toy-gsm8k' is not among"):
        scores(results, "toy-gsm8k")
