#!/bin/bash
# docs/results.md, issue 13 item 3 in the hard regime: a ReinforceLoRA trained with 300 look-alikes answered
# normally, on the buffer of `bnr sweep -c toy-hard-calibrate sweep.out=$SW`, merged onto that sweep's three bnr
# UserLoRAs the paper's way and by `bnr calibrate`, each evaluated. Finished steps are skipped on a rerun.
set -u
SW=${SW:-runs/toy-hard-calibrate}
O=$SW/lookalike
B=$(ls -d $SW/providers/buffer-* | head -1)
mkdir -p $O
[ -f $O/reinforce/manifest.json ] || bnr train-reinforce -c toy-hard-calibrate buffer=$B reinforce.lookalike_data.source=toy \
  reinforce.lookalike_data.path=benign_requests reinforce.n_lookalike=300 out=$O/reinforce toy.threads=1 \
  reinforce.train.progress=false > $O/reinforce.log 2>&1 || { echo "reinforce failed: $O/reinforce.log"; exit 1; }
for s in 42 30 50; do
  U=$(python -c "from bnr.recipes.sweep import read_cell; print(read_cell('$SW/cells/bnr-calibrated-p0.1-n1000-s$s')['user'])")
  [ -f $O/paper-s$s/manifest.json ] || bnr merge -c toy-hard-calibrate user=$U reinforce=$O/reinforce out=$O/paper-s$s > $O/paper-s$s.log 2>&1
  [ -f $O/calibrated-s$s/manifest.json ] || bnr calibrate -c toy-hard-calibrate seed=$s user=$U reinforce=$O/reinforce \
    out=$O/calibrated-s$s toy.threads=1 > $O/calibrated-s$s.log 2>&1
  for m in paper calibrated; do
    [ -f $O/eval-$m-s$s/summary.json ] || bnr eval -c toy-hard-calibrate target=$O/$m-s$s out=$O/eval-$m-s$s \
      eval.progress=false toy.threads=1 > $O/eval-$m-s$s.log 2>&1 || echo "eval $m s$s failed"
  done
done
python - "$O" <<'PY'
import json, sys
from pathlib import Path

from bnr.eval.tables import stat

o = Path(sys.argv[1])
for m in ("paper", "calibrated"):
    rows = []
    for s in (42, 30, 50):
        metrics = json.loads((o / f"eval-{m}-s{s}" / "manifest.json").read_text())["metrics"]
        rows.append([next(iter(v.values())) for v in metrics.values()])
    print(f"| BnR {m}, look-alike ReinforceLoRA | " + " | ".join(stat([r[i] for r in rows]).text() for i in range(3)) + " |")
PY
