#!/bin/bash
# docs/results.md, issue 13 item 3 on SmolLM2: a ReinforceLoRA trained with 300 look-alikes (harmless prompts that
# sound unsafe, answered normally: the shared safety-related Alpaca/Dolly subsets, disjoint from every evaluation
# and calibration prompt) beside the preset's refusal pairs, on the buffer of `bnr sweep -c smollm2-sweep`
# (sweep.out=$SW), merged onto that sweep's bnr UserLoRAs the paper's way and by `bnr calibrate`, each evaluated
# like the sweep's cells. Run it where the sweep ran; finished steps are skipped on a rerun.
set -u
SW=${SW:-runs/smollm2-sweep}
BASE=${BASE:-runs/align/A9/aligned}
SEEDS=${SEEDS:-42 30 50}
O=$SW/lookalike
C="-c smollm2-sweep model.name_or_path=$BASE"
B=$(ls -d $SW/providers/buffer-* | head -1)
mkdir -p $O
[ -f $O/reinforce/manifest.json ] || bnr train-reinforce $C buffer=$B reinforce.lookalike_data.source=shared \
  reinforce.lookalike_data.path=benign_instructions \
  'reinforce.lookalike_data.where={source: [alpaca_safety_related_subset, dolly_safety_related_subset]}' \
  reinforce.n_lookalike=300 out=$O/reinforce > $O/reinforce.log 2>&1 || { echo "reinforce failed: $O/reinforce.log"; exit 1; }
for s in $SEEDS; do
  cell=$SW/cells/bnr-calibrated-p0.1-n200-s$s
  [ -f $cell/cell.json ] || { echo "no $cell yet"; continue; }
  U=$(python -c "from bnr.recipes.sweep import read_cell; print(read_cell('$cell')['user'])")
  [ -f $O/paper-s$s/manifest.json ] || bnr merge $C user=$U reinforce=$O/reinforce out=$O/paper-s$s > $O/paper-s$s.log 2>&1
  [ -f $O/calibrated-s$s/manifest.json ] || bnr calibrate $C seed=$s user=$U reinforce=$O/reinforce \
    out=$O/calibrated-s$s > $O/calibrated-s$s.log 2>&1 || { echo "calibrate s$s failed: $O/calibrated-s$s.log"; continue; }
  for m in paper calibrated; do
    [ -f $O/eval-$m-s$s/summary.json ] || bnr eval $C target=$O/$m-s$s out=$O/eval-$m-s$s > $O/eval-$m-s$s.log 2>&1 \
      || echo "eval $m s$s failed: $O/eval-$m-s$s.log"
  done
done
