"""Distillation throughput with the embedded teacher: a full run, then a fully cached re-run.

Starts the embedded teacher server (llama-cpp-python, the `teacher` extra), distils
``configs/electronic/distill.yaml`` into a fresh (or, with --resume, the given) store and writes
JSON with records per type, failure rates, wall time, calls per second at the chosen concurrency
and the time of the cached second run.

    .venv/bin/python benchmarks/bench_distill.py                      # all 623 training sessions
    .venv/bin/python benchmarks/bench_distill.py --sessions 20 --concurrency 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def summary_figures(summary) -> dict:
    """The figures of one distillation summary that the closing note reports."""
    t = summary.teacher
    return {
        "wall_seconds": round(summary.wall_seconds, 2),
        "sessions": summary.sessions,
        "records": {k: {"ok": v.ok, "failed": v.failed, "failure_rate": round(v.failure_rate, 4),
                        "new": v.new, "seconds": round(v.seconds, 2), "failure_reasons": v.failure_reasons}
                    for k, v in summary.kinds.items()},
        "calls_made": t.get("calls_made", 0),
        "calls_cached": t.get("calls_cached", 0),
        "retries": t.get("retries", 0),
        "usage": t.get("usage", {}),
        "calls_per_second": t.get("calls_per_second", 0.0),
        "teacher_seconds": t.get("teacher_seconds", 0.0),
        "knowledge_set_counts": summary.knowledge_set_counts,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "electronic" / "distill.yaml"))
    parser.add_argument("--sessions", type=int, default=0, help="first N training sessions; 0 for all")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--store", default=str(REPO / "outputs" / "bench_distill" / "knowledge"))
    parser.add_argument("--resume", action="store_true", help="keep the store (resume a killed run)")
    parser.add_argument("--port", type=int, default=0, help="teacher port (0: a free one)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "distill.json"))
    args = parser.parse_args()

    from recbole_bundlellm.commands.distill import distill
    from recbole_bundlellm.teacher.server import TeacherServer

    store = Path(args.store)
    if store.exists() and not args.resume:
        raise SystemExit(f"{store} exists; pass --resume to continue it or remove it")
    os.environ.setdefault("BUNDLELLM_DATA", str(REPO / "dataset"))
    with TeacherServer(port=args.port or None) as server:
        overrides = {"knowledge_dir": str(store), "distill_max_sessions": args.sessions or None,
                     "teacher": {"base_url": server.base_url, "concurrency": args.concurrency}}
        first = distill([args.config], overrides, progress=True)
        print(first.format(), flush=True)
        start = time.perf_counter()
        second = distill([args.config], overrides, progress=False)
        cached_seconds = time.perf_counter() - start
        print(second.format(), flush=True)
    result = {
        "benchmark": "distill",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "teacher": "embedded SmolLM2-135M-Instruct Q4_1 GGUF via llama-cpp-python server on 127.0.0.1",
        "concurrency": args.concurrency,
        "resumed": args.resume,
        "first_run": summary_figures(first),
        "cached_run": {**summary_figures(second), "seconds_in_process": round(cached_seconds, 2)},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
