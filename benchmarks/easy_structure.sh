#!/usr/bin/env bash
# The easy-structure check on the full generated dataset (300 sessions; tests/test_easy_structure.py
# runs a short version in CI): PairSFT and the generated tags answer against Freq, Pairwise and the
# four floors. Writes benchmarks/results/easy_structure.{md,json}. About 10 minutes on 2 cores.
#   bash benchmarks/easy_structure.sh
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -c "from recbole_bundlellm.testing.easy_data import prepare_easy_data; prepare_easy_data('outputs/easy/data')"
.venv/bin/bundlellm compare configs/easy/pair_sft.yaml configs/easy/tags_sft.yaml configs/easy/freq.yaml \
  configs/easy/pairwise.yaml --floors --full --out benchmarks/results/easy_structure "$@"
