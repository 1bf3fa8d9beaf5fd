"""Structured outputs, off and on, with the embedded teacher on the same Electronic training sessions.

Starts the embedded teacher (llama-cpp-python's server on the SmolLM2-135M-Instruct GGUF, as
``bundlellm teacher serve`` does), distils ``rules`` and ``thoughts`` of the first N Electronic
training sessions (by id) with ``teacher.structured_outputs: off``, then ``on``, into one fresh
store, and writes per extractor: the share of unparsable answers before/after, failures and why,
calls made, tokens and seconds. ``on`` (not ``auto``) so that a refusal would stop the run
instead of silently asking in free text; llama-cpp-python's server refuses OpenAI's
``json_schema`` form (HTTP 500) and honours ``json_object`` with the schema, which the client
then uses (``structured_refusals: 1``, ``structured_format: json_object`` in the result).

Only ``rules`` declares a schema (its two bundle answers are JSON; its rules list and the
``thoughts`` reasoning are prose). ``thoughts`` therefore sends the same requests in both modes
and keeps its fingerprint: its ``on`` run reuses the ``off`` records and makes no call, which the
result says rather than paying for the same answers twice.

The run for the record (the CPU otherwise free; 3 sessions took 63 s off and 28 s on with one
llama.cpp thread beside other work, so 100 take roughly 30-50 minutes)::

    BUNDLELLM_DATA=$PWD/dataset OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_structured.py --sessions 100

Smoke test (a minute or two)::

    BUNDLELLM_DATA=$PWD/dataset .venv/bin/python benchmarks/bench_structured.py --sessions 3 --out /tmp/structured_smoke.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MODES = ("off", "on")


def answer_figures(records: list[Any]) -> dict[str, Any]:
    """What the ``rules`` records of one mode say about the teacher's bundle answers."""
    answers = unparsable = invalid_refs = 0
    for record in records:
        content = record.content
        for answer_key, bundles_key, feedback_key in (("initial", "initial_bundles", "feedback"),
                                                      ("revised", "revised_bundles", "revised_feedback")):
            if (content.get("answers") or {}).get(answer_key) is None:
                continue  # no such turn (no revision asked) or the run stopped before it
            answers += 1
            unparsable += content.get(bundles_key) is None
            labels = ((content.get(feedback_key) or {}).get("bundles")) or []
            invalid_refs += any("invalid" in b.get("labels", []) for b in labels)
    no_rule = sum(1 for r in records if r.reason == "no rule could be parsed from the teacher's answer")
    return {
        "bundle_answers": answers,
        "unparsable_answers": unparsable,
        "unparsable_share": round(unparsable / answers, 4) if answers else None,
        "answers_naming_a_missing_product": invalid_refs,
        "sessions_without_a_parsable_rule": no_rule,
        "mean_initial_f1": round(sum(r.content.get("initial_f1") or 0.0 for r in records) / len(records), 4)
        if records else None,
    }


def kind_figures(kind: str, records: list[Any], summary: Any) -> dict[str, Any]:
    """Records, failure share and reasons (and for rules the answer figures) of one mode."""
    failed = [r for r in records if not r.ok]
    reasons = Counter((r.reason or "").split(":")[0] for r in failed)
    out: dict[str, Any] = {
        "records": len(records),
        "failed": len(failed),
        "failed_share": round(len(failed) / len(records), 4) if records else None,
        "failure_reasons": dict(reasons.most_common()),
        "new_records": summary.kinds[kind].new,
        "seconds": round(summary.kinds[kind].seconds, 2),
    }
    if kind == "rules":
        out.update(answer_figures(records))
    else:  # thoughts: prose; "unparsable" is an answer failing the consistency check
        out["unparsable_share"] = out["failed_share"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=100, help="first N Electronic training sessions")
    parser.add_argument("--config", default=str(REPO / "configs" / "electronic" / "distill.yaml"))
    parser.add_argument("--store", default=str(REPO / "outputs" / "bench_structured" / "knowledge"),
                        help="a fresh store (removed first)")
    parser.add_argument("--n-threads", type=int, default=None, help="llama.cpp threads (default: its choice)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "structured_outputs.json"))
    args = parser.parse_args()

    from recbole_bundlellm.commands.distill import distill
    from recbole_bundlellm.knowledge.store import KnowledgeStore
    from recbole_bundlellm.teacher.server import TeacherServer

    os.environ.setdefault("BUNDLELLM_DATA", str(REPO / "dataset"))
    store = Path(args.store)
    shutil.rmtree(store, ignore_errors=True)
    results: dict[str, Any] = {}
    with TeacherServer(port=0, n_threads=args.n_threads) as server:
        seen: set[str] = set()
        for mode in MODES:
            overrides = {"knowledge_dir": str(store), "distill_max_sessions": args.sessions,
                         "knowledge_types": ["rules", "thoughts"], "sampling": None,
                         "teacher": {"base_url": server.base_url, "structured_outputs": mode}}
            start = time.perf_counter()
            summary = distill([args.config], overrides, progress=False)
            wall = time.perf_counter() - start
            print(summary.format(), flush=True)
            kept = KnowledgeStore(store)
            figures: dict[str, Any] = {}
            for kind in ("rules", "thoughts"):
                # This mode's records: those of the fingerprint its run used (thoughts: one for both).
                fingerprints = {r.fingerprint for r in kept.records(kind)}
                mine = fingerprints - seen if fingerprints - seen else fingerprints
                records = [r for r in kept.records(kind) if r.fingerprint in mine]
                figures[kind] = kind_figures(kind, records, summary)
            seen |= {r.fingerprint for r in kept.records()}
            t = summary.teacher
            results[mode] = {
                "wall_seconds": round(wall, 2),
                "calls_made": t.get("calls_made", 0),
                "calls_cached": t.get("calls_cached", 0),
                "structured_calls": t.get("structured_calls", 0),
                "structured_refusals": t.get("structured_refusals", 0),
                "structured_format": t.get("structured_format"),
                "usage": t.get("usage", {}),
                "call_seconds": t.get("call_seconds", 0.0),
                "kinds": figures,
            }
    off, on = results["off"]["kinds"], results["on"]["kinds"]
    result = {
        "benchmark": "structured_outputs",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "teacher": "embedded SmolLM2-135M-Instruct GGUF via llama-cpp-python server on 127.0.0.1",
        "sessions": args.sessions,
        "schemas": {"rules": "bundle answers (initial, revised): {\"bundles\": [[product names]]}, names limited "
                             "to the session's products; the rules list: free text",
                    "thoughts": "none (prose): same requests and fingerprint in both modes, so the 'on' run "
                                "reuses the 'off' records and makes no call"},
        "unparsable_share": {kind: {"off": off[kind]["unparsable_share"], "on": on[kind]["unparsable_share"]}
                             for kind in ("rules", "thoughts")},
        "modes": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["unparsable_share"]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
