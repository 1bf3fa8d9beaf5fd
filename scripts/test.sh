#!/usr/bin/env bash
# Install everything (if needed) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export BUNDLELLM_RAW_DATA=${BUNDLELLM_RAW_DATA:-$(cd .. && pwd)/shared/data/bundle}
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
