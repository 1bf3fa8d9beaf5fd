#!/usr/bin/env bash
# One prepared check for the day a CUDA GPU is lent; a few minutes on one H100-class GPU.
#
#   benchmarks/gpu_check.sh            (from the repository root; PYTHON=.venv/bin/python by default)
#
# Needs the prepared Electronic data (BUNDLELLM_DATA, default ./dataset) and the embedded student.
# Writes benchmarks/results/gpu_check.json with:
#   sft_bf16 / sft_fp32   benchmarks/bench_sft.py on cuda: SFT tokens/s of SFT_BATCHES real optimizer
#                         steps, generation sessions/s (batched and one at a time), peak GPU memory
#   plan                  `bundlellm plan` on cuda: the memory estimate against the CUDA allocator's
#                         peak of a 3-step warm-up (bf16)
#   run_bf16              `bundlellm run` BundleSFT for one epoch, --llm_device=cuda --llm_dtype=bfloat16,
#                         tested on the first SESSIONS test sessions: timing and scores from metrics.json
#   torchrun_nccl         the same run as one torchrun process (the process group on NCCL)
# Without CUDA it stops at once with one error line and exit 2, having run nothing.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
DATA="${BUNDLELLM_DATA:-$REPO/dataset}"
SESSIONS="${SESSIONS:-64}"
SFT_BATCHES="${SFT_BATCHES:-20}"
OUT="${OUT:-$REPO/benchmarks/results/gpu_check.json}"
export PYTHONPATH="$REPO:$REPO/plugins${PYTHONPATH:+:$PYTHONPATH}"

if [ ! -x "$PYTHON" ] && ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "error: gpu_check.sh: no Python at $PYTHON (set PYTHON=...)" >&2
    exit 2
fi
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "error: gpu_check.sh needs a CUDA GPU: torch.cuda.is_available() is False here; nothing was run" >&2
    exit 2
fi
if [ ! -f "$DATA/electronic/dataset_card.json" ]; then
    echo "error: gpu_check.sh needs the prepared Electronic data under $DATA (bundlellm data prepare, or set BUNDLELLM_DATA)" >&2
    exit 2
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
START=$(date +%s)
log() { echo "[gpu_check $(( $(date +%s) - START ))s] $*" >&2; }

log "SFT and generation speed, bfloat16"
"$PYTHON" "$REPO/benchmarks/bench_sft.py" --device cuda --dtype bfloat16 --batches "$SFT_BATCHES" \
    --sessions "$SESSIONS" --data-path "$DATA" --out "$WORK/sft_bf16.json"
log "SFT and generation speed, float32"
"$PYTHON" "$REPO/benchmarks/bench_sft.py" --device cuda --dtype float32 --batches "$SFT_BATCHES" \
    --sessions "$SESSIONS" --data-path "$DATA" --out "$WORK/sft_fp32.json"

log "bundlellm plan on cuda (estimate vs the allocator's peak)"
"$PYTHON" -m recbole_bundlellm.commands.cli plan --model BundleSFT --dataset electronic --data_path="$DATA" \
    --llm_device=cuda --llm_dtype=bfloat16 --json "$WORK/plan.json" >&2

# One epoch over every training session, no validation pass and no decoding calibration (they
# would generate the valid sessions again and again), SESSIONS test sessions.
RUN_ARGS=(run --model BundleSFT --dataset electronic --data_path="$DATA" --llm_device=cuda --llm_dtype=bfloat16
          --epochs=1 --eval_step=0 --label_bias_grid='[]' --eval_max_sessions="$SESSIONS"
          --valid_max_sessions="$SESSIONS")
log "bundlellm run BundleSFT, bfloat16, one epoch"
"$PYTHON" -m recbole_bundlellm.commands.cli "${RUN_ARGS[@]}" --output-dir "$WORK/run_bf16" >&2

log "the same run as one torchrun process over NCCL"
PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$PYTHON" -m torch.distributed.run --nproc_per_node=1 --master_addr=127.0.0.1 --master_port="$PORT" \
    -m recbole_bundlellm.commands.cli "${RUN_ARGS[@]}" --output-dir "$WORK/run_torchrun" >&2
NCCL=$("$PYTHON" -m torch.distributed.run --nproc_per_node=1 --master_addr=127.0.0.1 --master_port="$PORT" \
    --no-python "$PYTHON" -c 'import torch, torch.distributed as d; d.init_process_group("nccl"); t = torch.ones(1, device="cuda"); d.all_reduce(t); print(d.get_backend(), float(t)); d.destroy_process_group()' 2>/dev/null \
    | tail -1 || echo "failed")

log "writing $OUT"
"$PYTHON" - "$WORK" "$OUT" "$NCCL" "$(( $(date +%s) - START ))" <<'EOF'
import json, platform, sys
from pathlib import Path

import torch

work, out, nccl, seconds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
read = lambda p: json.loads(p.read_text())  # noqa: E731


def run_summary(folder):
    metrics = read(folder / "metrics.json")
    info = metrics["info"]
    return {"timing": metrics["timing"], "test": metrics["test"], "training": info.get("training"),
            "parameters": info.get("parameters"), "device": info.get("device"), "dtype": info.get("dtype"),
            "attn_implementation": info.get("attn_implementation"), "generation": info.get("generation")}


sft = {name: read(work / f"{name}.json") for name in ("sft_bf16", "sft_fp32")}
plan = read(work / "plan.json")
result = {
    "machine": {"platform": platform.platform(), "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                "cuda": torch.version.cuda},
    "seconds": seconds,
    "sft_tokens_per_second": {k: v["training"]["tokens_per_second"] for k, v in sft.items()},
    "generation_sessions_per_second": {k: v["generation_unmerged"]["batched"]["sessions_per_second"]
                                       for k, v in sft.items()},
    "peak_gpu_memory_gb": {k: v.get("peak_gpu_memory_gb") for k, v in sft.items()},
    "plan": {"estimated_training_bytes": plan["memory_bytes"]["training"],
             "measured_peak_bytes": plan["warmup"].get("measured_peak_bytes"), "report": plan},
    "sft_bf16": sft["sft_bf16"], "sft_fp32": sft["sft_fp32"],
    "run_bf16": run_summary(work / "run_bf16"),
    "torchrun_nccl": {"run": run_summary(work / "run_torchrun"), "all_reduce": nccl},
}
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps({k: result[k] for k in ("seconds", "sft_tokens_per_second", "generation_sessions_per_second",
                                          "peak_gpu_memory_gb")}, indent=2))
EOF
