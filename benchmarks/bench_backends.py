"""Benchmark the generation backends on the main job's sessions: ``transformers`` against ``openai``.

The main job's zero-shot BundleLLM row (``configs/electronic/bundlellm_zero_shot.yaml``, the
first 40 Electronic test sessions by id, as ``scripts/main.sh`` scores them) is run twice in one
process, on the embedded SmolLM2-135M-Instruct both times:

- ``transformers``: the student's weights in this process (the default backend);
- ``openai``: the same student's GGUF served by the embedded llama.cpp server
  (``recbole_bundlellm.teacher.server.TeacherServer``, started here on a free port and stopped
  after), asked with ``generation_backend: openai``. Its answer cache is a fresh folder, so every
  answer is asked over HTTP.

The runs go one after the other (never sharing the cores). Written to ``--out`` (default
``benchmarks/results/generation_backends.json``): per backend the sessions, seconds spent
generating (the backend's own ``stats.seconds``) and sessions/s from them, the run's wall time,
tokens, calls made and the parse failure share; the ratio openai / transformers of sessions/s;
the share of sessions whose raw answers are the same text, and whose parsed bundles are the same;
the settings and the machine. Nothing is asserted: tests never time things.

Run it when the CPU is free (about 2 x 1 minute on 2 idle cores; the prepared data in
``dataset/`` or ``--data-path``)::

    .venv/bin/python benchmarks/bench_backends.py                      # the 40 sessions, all cores
    .venv/bin/python benchmarks/bench_backends.py --sessions 3 --out /tmp/backends_smoke.json

``--server-threads N`` gives llama.cpp N threads (default: every core, at most 8, as ``bundlellm
teacher serve``; on a machine busy with other work use 1: llama.cpp's threads busy-wait on each
other, and a 3-session smoke run took 139 s with 2 threads against 14 s with 1); ``--concurrency`` is the requests in flight (the embedded server answers one at a
time and queues the rest); ``--work DIR`` keeps the two runs' output folders (default: a
temporary folder, removed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

import recbole_bundlellm  # noqa: E402,F401  (compat patches before recbole)

from recbole_bundlellm.commands.runner import run_config  # noqa: E402

CONFIG = REPO / "configs" / "electronic" / "bundlellm_zero_shot.yaml"


def _predictions(out: Path) -> dict[str, dict[str, Any]]:
    return {r["session_id"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}


def one_run(backend: str, overrides: dict[str, Any], out: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Run the zero-shot row with ``backend``; its figures and its predictions by session id."""
    start = time.perf_counter()
    result = run_config([CONFIG], {**overrides, "generation_backend": backend}, output_dir=out)
    wall = time.perf_counter() - start
    info = json.loads((result.output_dir / "metrics.json").read_text())["info"]
    predictions = _predictions(result.output_dir)
    stats = info["generation"]
    sessions = len(predictions)
    seconds = float(stats["seconds"])
    figures = {
        "sessions": sessions,
        "generation_seconds": round(seconds, 2),
        "sessions_per_second": round(sessions / seconds, 4) if seconds else None,
        "run_wall_seconds": round(wall, 2),
        "load_seconds": info.get("load_seconds"),
        "failed_share": round(sum(p["predicted_bundles"] is None for p in predictions.values()) / max(sessions, 1), 4),
        "exact_f1": round(float(result.test_result.get("exactf1", 0.0)), 4),
        "stats": stats,
        "backend": info["generation_backend"],
    }
    return figures, predictions


def same_share(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]], field: str) -> float | None:
    """The share of the sessions of both whose ``field`` is equal (bundles compared as sets)."""
    common = sorted(set(a) & set(b))
    if not common:
        return None

    def value(p: dict[str, Any]) -> Any:
        v = p[field]
        return sorted(map(sorted, v)) if field == "predicted_bundles" and v is not None else v

    return round(sum(value(a[s]) == value(b[s]) for s in common) / len(common), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=40, help="the first N test sessions by id (main job: 40)")
    parser.add_argument("--data-path", default=os.environ.get("BUNDLELLM_DATA", str(REPO / "dataset")))
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight (openai backend)")
    parser.add_argument("--server-threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    parser.add_argument("--work", type=Path, default=None, help="keep the runs' folders here (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "generation_backends.json")
    args = parser.parse_args()

    from recbole_bundlellm.teacher.server import TeacherServer, default_n_threads

    with tempfile.TemporaryDirectory(prefix="bench_backends-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        overrides: dict[str, Any] = {"data_path": str(Path(args.data_path).resolve()),
                                     "eval_max_sessions": args.sessions, "show_progress": False}
        transformers, local = one_run("transformers", overrides, work / "transformers")
        threads = args.server_threads or default_n_threads()
        started = time.perf_counter()
        with TeacherServer(port=0, n_threads=threads) as server:
            server_start = time.perf_counter() - started
            cache = work / "openai.answers"
            shutil.rmtree(cache, ignore_errors=True)  # this script's own: every answer is asked over HTTP
            block = {"base_url": server.base_url, "model": server.model, "concurrency": args.concurrency,
                     "cache_dir": str(cache)}
            served, remote = one_run("openai", {**overrides, "openai": block}, work / "openai")
            served["server"] = {"start_seconds": round(server_start, 2), "n_threads": threads,
                                "model_alias": server.model}

    import importlib.metadata

    import torch

    a, b = transformers["sessions_per_second"], served["sessions_per_second"]
    result = {
        "command": "python benchmarks/bench_backends.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "llama_cpp_python": importlib.metadata.version("llama_cpp_python")},
        "settings": {"config": str(CONFIG.relative_to(REPO)), "sessions": args.sessions,
                     "concurrency": args.concurrency, "server_threads": threads, **overrides},
        "backends": {"transformers": transformers, "openai": served},
        "openai_over_transformers_sessions_per_second": round(b / a, 3) if a and b else None,
        "same_raw_answer_share": same_share(local, remote, "raw_text"),
        "same_bundles_share": same_share(local, remote, "predicted_bundles"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("openai_over_transformers_sessions_per_second", "same_raw_answer_share",
                                             "same_bundles_share")}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
