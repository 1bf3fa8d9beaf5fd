"""Read-only views of a knowledge store, for ``bundlellm knowledge show|export``."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from recbole_bundlellm.fileio import atomic_write_text, os_error_reason
from recbole_bundlellm.knowledge.records import KnowledgeRecord, reason_class
from recbole_bundlellm.knowledge.store import KnowledgeStore, StoreError, enclosing_store
from recbole_bundlellm.teacher.batch import batch_jobs
from recbole_bundlellm.teacher.calls import Usage


def select_records(store: KnowledgeStore, *, kind: str | None = None, domain: str | None = None,
                   status: str = "all", session: str | None = None,
                   fingerprint: str | None = None) -> list[KnowledgeRecord]:
    """Stored records filtered by kind, domain, status (ok, failed, all), session and fingerprint
    (a prefix is enough)."""
    if status not in ("ok", "failed", "all"):
        raise ValueError(f"status must be ok, failed or all, got '{status}'")
    return [r for r in store.records(kind, domain, status=None if status == "all" else status)
            if (session is None or r.session_id == session)
            and (fingerprint is None or r.fingerprint.startswith(fingerprint))]


def overview(store: KnowledgeStore) -> str:
    """Records per (domain, kind, fingerprint) with failure reasons; calls and tokens; sets; last run."""
    if not store.root.exists():
        raise FileNotFoundError(f"no knowledge store at {store.root}")
    groups: dict[tuple[str, str, str], list[KnowledgeRecord]] = defaultdict(list)
    for rec in store.records():
        groups[(rec.domain, rec.kind, rec.fingerprint)].append(rec)
    calls = store.calls()
    usage = Usage()
    for call in calls:
        usage.add(call.usage)
    lines = [f"knowledge store {store.root}: {len(store)} records, {len(calls)} teacher calls "
             f"({usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens)"]
    if groups:
        lines.append(f"{'domain':12s} {'kind':10s} {'fingerprint':16s} {'ok':>6s} {'failed':>7s}  top failure reasons")
    for (domain, kind, fp), recs in sorted(groups.items()):
        ok = sum(r.ok for r in recs)
        reasons = Counter(reason_class(r.reason) for r in recs if not r.ok)
        top = "; ".join(f"{reason} ({n})" for reason, n in reasons.most_common(3))
        lines.append(f"{domain:12s} {kind:10s} {fp:16s} {ok:6d} {len(recs) - ok:7d}  {top}")
    jobs = list(batch_jobs(store.batch_events()).values())
    if jobs:
        open_jobs = [job for job in jobs if job.open]
        lines.append(f"batches: {len(jobs)} ({len(jobs) - len(open_jobs)} done)")
        for job in open_jobs:
            lines.append(f"batch {job.batch_id or job.local_id} ({job.state}, {len(job.keys)} requests) is still open: "
                         "run the same `bundlellm distill` again to resume it")
    for aside in sorted(store.root.glob("*.jsonl.damaged")):
        lines.append(f"damaged lines moved aside: {aside.name} (kept for inspection; the store no longer reads them)")
    sets = sorted((store.root / "sets").glob("*.json"))
    for path in sets:
        counts = json.loads(path.read_text(encoding="utf-8")).get("counts", {})
        lines.append(f"set {path.name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    runs = sorted((store.root / "runs").glob("*.json"))
    if runs:
        last = json.loads(runs[-1].read_text(encoding="utf-8"))
        t = last.get("teacher") or {}
        lines.append(f"last run {runs[-1].name}: {last.get('sessions')} sessions, {last.get('wall_seconds', 0):.1f} s, "
                     f"{t.get('calls_made', 0)} calls made, {t.get('calls_cached', 0)} from the store")
    return "\n".join(lines)


def show_records(records: Iterable[KnowledgeRecord], limit: int | None, out: TextIO) -> int:
    """Print records as indented JSON (at most ``limit``); returns how many were printed."""
    n = 0
    for rec in records:
        if limit is not None and n >= limit:
            break
        out.write(json.dumps(rec.to_json(), indent=2, ensure_ascii=False) + "\n")
        n += 1
    return n


def export_records(records: Iterable[KnowledgeRecord], path: Path, fmt: str = "jsonl") -> int:
    """Write records to ``path`` as JSON Lines (``jsonl``) or one JSON array (``json``).

    A path inside a knowledge store is refused (:class:`StoreError`): the store's files are
    written under its lock only, and an export holds only the selected records.
    """
    if fmt not in ("jsonl", "json"):
        raise ValueError(f"format must be jsonl or json, got '{fmt}'")
    store = enclosing_store(path)
    if store is not None:
        raise StoreError(f"refusing to export into the knowledge store {store}: write the export outside it")
    rows: list[dict[str, Any]] = [r.to_json() for r in records]
    if fmt == "jsonl":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    else:
        text = json.dumps(rows, ensure_ascii=False, indent=1)
    try:
        atomic_write_text(path, text)  # never half an export
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {os_error_reason(exc)}") from exc
    return len(rows)
