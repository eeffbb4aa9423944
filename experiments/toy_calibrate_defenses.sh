#!/bin/bash
# docs/results.md "Toy world: calibrated merge strengths", default regime on the rebuilt base: `bnr calibrate`
# on the three p = 0.1 UserLoRAs of the all-defense sweep (runs/toy-defenses, `bnr sweep -c toy-defenses`), with
# the sweep's ReinforceLoRA and with the look-alike one (runs/lookalike/reinforce, item 3), then `bnr eval` of
# each calibrated merge. Run from the repository root; finished steps are skipped on a rerun.
set -u
R=$(ls -d runs/toy-defenses/providers/reinforce-* | head -1)
L=runs/lookalike/reinforce
for s in 42 30 50; do
  U=$(python -c "from bnr.recipes.sweep import read_cell; print(read_cell('runs/toy-defenses/cells/bnr-calibrated-p0.1-n1000-s$s')['user'])")
  for kind in preset lookalike; do
    RR=$R; [ $kind = lookalike ] && RR=$L
    O=runs/calib-default/$kind-s$s
    mkdir -p runs/calib-default
    [ -f $O/calibrated/manifest.json ] || bnr calibrate -c toy-defenses seed=$s user=$U reinforce=$RR \
      out=$O/calibrated toy.threads=1 > $O.calibrate.log 2>&1 || { echo "calibrate $kind s$s failed: $O.calibrate.log"; continue; }
    [ -f $O/eval/summary.json ] || bnr eval -c toy-grid target=$O/calibrated out=$O/eval eval.progress=false \
      toy.threads=1 > $O.eval.log 2>&1 || echo "eval $kind s$s failed: $O.eval.log"
  done
done
# the table: mean +- std over the seeds of each kind, and what the search chose per seed
python - <<'PY'
import json
from pathlib import Path

from bnr.eval.tables import stat

for kind in ("preset", "lookalike"):
    rows, chosen, cost = [], [], []
    for s in (42, 30, 50):
        d = Path(f"runs/calib-default/{kind}-s{s}")
        metrics = json.loads((d / "eval" / "manifest.json").read_text())["metrics"]
        rows.append([next(iter(m.values())) for m in metrics.values()])
        cal = json.loads((d / "calibrated" / "manifest.json").read_text())["calibration"]
        chosen.append(f"s{s}: {cal['chosen']['name']}")
        cost.append(cal["cost"]["calibration_wall_time_s"])
    cells = " | ".join(stat([r[i] for r in rows]).text() for i in range(3))
    print(f"| BnR calibrated, {kind} ReinforceLoRA | {cells} | {stat(cost).text()} | {'; '.join(chosen)} |")
PY
