#!/usr/bin/env bash
# GPU path: on a machine with CUDA, install the requirements and reproduce the deck's four models at
# 224 px for 20 epochs, printing the deck-style table with times (goal: all four in <= 60 s in total;
# the deck took 19.7 min on a Colab GPU). Designed to finish within 8 minutes.
#
#   bash benchmarks/gpu.sh [DATA_DIR]
#
# Environment overrides (used by the CPU test with a tiny configuration):
#   DEVICE=cuda IMG=224 EPOCHS=20 SKIP_INSTALL=0 CXRVIZ_CHECKPOINTS=<dir for the runs>
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-${DATA:-../shared/data/Covid19-dataset}}"
DEVICE="${DEVICE:-cuda}"
IMG="${IMG:-224}"
EPOCHS="${EPOCHS:-20}"
export CXRVIZ_CHECKPOINTS="${CXRVIZ_CHECKPOINTS:-$(mktemp -d)/checkpoints}"
export CXRVIZ_CACHE="${CXRVIZ_CACHE:-$(mktemp -d)/cache}"

if [ "${SKIP_INSTALL:-0}" != "1" ]; then
  python3 -m pip install -q -r requirements.txt
fi
python3 - <<PY
import torch
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
PY
if [ ! -d "$DATA" ]; then
  echo "note: $DATA not found; using the built-in synthetic set" >&2
  DATA_ARGS=()
else
  DATA_ARGS=(--data "$DATA")
fi
start=$(date +%s.%N)
python3 -m cxrviz reproduce "${DATA_ARGS[@]}" --img-size "$IMG" --epochs "$EPOCHS" --device "$DEVICE" --quiet
end=$(date +%s.%N)
python3 - "$start" "$end" <<'PY'
import sys
s, e = map(float, sys.argv[1:])
print(f"\nall four models, wall clock including data loading and cache build: {e - s:.1f} s (goal <= 60 s)")
PY
python3 - <<'PY'
from cxrviz.runs import list_runs
runs, _ = list_runs()
print("where the time went (s):   data   train  eval (incl. precise BN)  total")
for r in sorted(runs, key=lambda r: r.meta.get("created", "")):
    t = r.meta["timings"]
    print(f"  {r.meta['display']:22s} {t['data_s']:6.1f} {t['train_s']:7.1f} {t['eval_s']:6.1f} {t['total_s']:20.1f}")
PY
