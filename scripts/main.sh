#!/usr/bin/env bash
# The main job: install, prepare Electronic, train (or reuse) the best student, PairSFT (the student
# LLM scoring product pairs from its hidden states), and run it next to BundleLLM (zero-/one-shot),
# Freq, Pairwise and the label-free floors; print one comparison table. Every run scores the same
# first 40 test sessions (by id): about 15 minutes on 2 CPU cores the first time (PairSFT trains
# on all 623 training sessions), about 5 once its adapter is reused. Extra arguments go to
# `bundlellm compare` (--full scores all 180 test sessions).
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
  configs/electronic/pair_sft.yaml \
  configs/electronic/freq.yaml \
  configs/electronic/pairwise.yaml \
  configs/electronic/bundlellm_zero_shot.yaml \
  configs/electronic/bundlellm_zero_shot_primed.yaml \
  configs/electronic/bundlellm_one_shot.yaml \
  --floors --eval_max_sessions=40 --out outputs/electronic/comparison "$@"
