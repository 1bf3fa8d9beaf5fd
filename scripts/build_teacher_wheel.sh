#!/usr/bin/env bash
# Build (once) a portable llama-cpp-python wheel for the embedded teacher server and print its path.
#
# Why not plain `pip install llama-cpp-python`: pip compiles llama.cpp with its default
# GGML_NATIVE=ON, i.e. for every instruction the build machine's CPU advertises (AVX-512, AMX...).
# Such a wheel dies with SIGILL on another CPU, or even on the same one inside a VM that traps
# those instructions, and pip's wheel cache hands the same native wheel to every later install
# (its key ignores CMAKE_ARGS). So we build with an explicit instruction-set baseline into a cache
# folder of our own whose name is the hash of (version, flags): a changed baseline is a new build,
# and pip's own wheel cache is never used for it.
set -euo pipefail
cd "$(dirname "$0")/.."
# The version pinned by the `teacher` extra in pyproject.toml: one place to change it.
VERSION=$(sed -n 's/.*"llama-cpp-python\[server\]==\([0-9.]*\)".*/\1/p' pyproject.toml)
[ -n "$VERSION" ] || { echo "error: no llama-cpp-python pin in pyproject.toml" >&2; exit 1; }
PY=${1:-python3}  # the Python the wheel is for (its version is part of the cache key)
case "$(uname -m)" in
  x86_64|amd64)
    if grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo && grep -qw f16c /proc/cpuinfo; then
      # AVX2-class baseline (every x86-64 server CPU since 2013); nothing newer, no AVX-512/AMX.
      FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
    else
      FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_AVX512=OFF"
    fi ;;
  *) FLAGS="-DGGML_NATIVE=OFF" ;;
esac
# Nothing but the library: no tests, examples or tools (saves a third of the compile).
FLAGS="$FLAGS -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF"
KEY=$(printf '%s|%s|%s' "$VERSION" "$FLAGS" "$("$PY" -c 'import sys,sysconfig; print(sys.version_info[:2], sysconfig.get_platform())')" | sha256sum | cut -c1-16)
DEST="${BUNDLELLM_CACHE:-${HOME:-/tmp}/.cache/recbole_bundlellm}/wheels/llama-cpp-python-$VERSION-$KEY"
if [ -n "${BUNDLELLM_REBUILD_TEACHER:-}" ]; then
  rm -rf "$DEST"
fi
WHEEL=$(ls "$DEST"/llama_cpp_python-*.whl 2>/dev/null | head -1 || true)
if [ -z "$WHEEL" ]; then
  echo "setup: compiling llama.cpp $VERSION for the teacher server (once per machine, about 4 minutes on 2 cores)" >&2
  mkdir -p "$DEST.tmp"
  log="$DEST.tmp/build.log"
  if ! CMAKE_ARGS="$FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc 2>/dev/null || echo 2)" \
       "$PY" -m pip wheel --no-deps --no-cache-dir --no-binary llama-cpp-python \
       "llama-cpp-python==$VERSION" -w "$DEST.tmp" >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "error: building llama-cpp-python $VERSION failed (full log: $log)" >&2
    exit 1
  fi
  rm -rf "$DEST"; mv "$DEST.tmp" "$DEST"
  WHEEL=$(ls "$DEST"/llama_cpp_python-*.whl | head -1)
fi
echo "$WHEEL"
