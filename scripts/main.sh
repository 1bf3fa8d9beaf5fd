#!/usr/bin/env bash
# The main job: install, prepare Electronic, run Freq and BundleLLM (zero-/one-shot) next to the
# label-free floors, and print one comparison table. Every run scores the same first 40 test
# sessions (by id), about 5 minutes on 2 CPU cores; extra arguments go to `bundlellm compare`
# (--full scores all 180 test sessions, about 20 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RAW=${BUNDLELLM_RAW_DATA:-../shared/data/bundle}
if [ ! -f "$RAW/electronic/aicl_split/sessions.csv" ]; then
  echo "error: raw data not found under $RAW (set BUNDLELLM_RAW_DATA to the folder holding electronic/, clothing/, food/)" >&2
  exit 2
fi
export BUNDLELLM_DATA=${BUNDLELLM_DATA:-dataset}
.venv/bin/bundlellm data prepare --raw "$RAW" --out "$BUNDLELLM_DATA" --domain electronic
.venv/bin/bundlellm compare \
  configs/electronic/freq.yaml \
  configs/electronic/bundlellm_zero_shot.yaml \
  configs/electronic/bundlellm_zero_shot_primed.yaml \
  configs/electronic/bundlellm_one_shot.yaml \
  --floors --eval_max_sessions=40 --out outputs/electronic/comparison "$@"
