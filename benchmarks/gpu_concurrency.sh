#!/usr/bin/env bash
# Several jobs per GPU: the deck's four models x 3 seeds (12 runs), 224 px, 20 epochs, trained with 1 job per
# device and then with N (default: auto, from free memory and a probe step), wall clock of each. Needs CUDA;
# with several GPUs, --device auto also spreads the runs over all of them (least queued work first).
# Not yet run on a GPU (no device was lent to the session that wrote it).
#
#   bash benchmarks/gpu_concurrency.sh [DATA_DIR] [N]
#
# Environment overrides (for a quick try): IMG=224 EPOCHS=20 SEEDS="0 1 2" DEVICE=auto SKIP_INSTALL=1
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-${DATA:-../shared/data/Covid19-dataset}}"
N="${2:-auto}"
IMG="${IMG:-224}"
EPOCHS="${EPOCHS:-20}"
SEEDS="${SEEDS:-0 1 2}"
DEVICE="${DEVICE:-auto}"
export CXRVIZ_CACHE="${CXRVIZ_CACHE:-$(mktemp -d)/cache}"
if [ "${SKIP_INSTALL:-1}" != "1" ]; then
  python3 -m pip install -q -r requirements.txt
fi
DATA_ARGS=()
[ -d "$DATA" ] && DATA_ARGS=(--data "$DATA") || echo "note: $DATA not found; using the built-in synthetic set" >&2
for per in 1 "$N"; do
  export CXRVIZ_CHECKPOINTS="$(mktemp -d)/checkpoints"
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  python3 -m cxrviz train --arch alexnet vgg19 googlenet resnet18 --seeds $SEEDS "${DATA_ARGS[@]}" \
    --img-size "$IMG" --epochs "$EPOCHS" --device "$DEVICE" --jobs-per-device "$per" --quiet
  end=$(date +%s.%N)
  python3 - "$start" "$end" "$per" <<'PY'
import sys
s, e, per = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
print(f"\n== jobs per device {per}: 12 runs in {e - s:.1f} s wall clock (goal <= 60 s on one H200) ==\n")
PY
done
