"""The knowledge store: append-only JSON Lines on disk, safe to kill at any point.

Layout of a store folder::

    calls.jsonl      one completed teacher call per line (CallRecord), keyed by request hash
    records.jsonl    one knowledge record per line (KnowledgeRecord), keyed by record_id
    sets/            knowledge sets derived by sampling (rewritten atomically; recomputable)
    runs/            one JSON summary per distillation run
    .lock            held (flock) by the process writing the store

Why it survives a SIGKILL: every line is written with one ``write`` on a file opened with
``O_APPEND`` and then fsynced, before the work that depends on it goes on. A kill can only
leave a torn *last* line (no trailing newline), which is cut off and reported on the next
open; every complete line is a finished call or record. Keys are checked in memory before
writing, so nothing is stored twice. A damaged line in the middle is never skipped silently:
opening the store fails and names the file and line.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.knowledge.records import KnowledgeRecord
from recbole_bundlellm.teacher.calls import CallRecord

log = logging.getLogger(__name__)


class StoreError(BundleLLMError, RuntimeError):
    """A knowledge store that cannot be opened or written as asked."""


class StoreLocked(StoreError):
    """Another process is writing this store."""


def _read_jsonl(path: Path, repair: bool) -> list[dict[str, Any]]:
    """The complete lines of ``path``; a torn last line is cut off (when ``repair``) or ignored."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    complete, _, tail = raw.rpartition(b"\n")
    if tail:
        if repair:
            log.warning("%s: cut off an incomplete last line of %d bytes (an interrupted write)", path, len(tail))
            with open(path, "r+b") as f:
                f.truncate(len(raw) - len(tail))
    rows = []
    for lineno, line in enumerate(complete.split(b"\n") if complete else [], start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise StoreError(f"{path}:{lineno}: damaged line ({exc.msg}); the store was edited or "
                             "written by something else; move the file aside to start afresh") from exc
    return rows


class _AppendLog:
    """One append-only JSONL file with whole-line atomic appends."""

    def __init__(self, path: Path, fsync: bool) -> None:
        self.path = path
        self.fsync = fsync
        self._fd: int | None = None

    def append(self, obj: dict[str, Any]) -> None:
        line = (json.dumps(obj, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        written = os.write(self._fd, line)
        if written != len(line):  # a short write on a full disk: never leave a torn line behind
            raise StoreError(f"{self.path}: short write ({written} of {len(line)} bytes); disk full?")
        if self.fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class KnowledgeStore:
    """Teacher calls and knowledge records of one store folder (the teacher's
    :class:`~recbole_bundlellm.teacher.calls.CallCache`).

    Reading needs no lock. Writing happens inside :meth:`writer` (an exclusive ``flock`` on
    ``.lock``), so two distillations never interleave in one store; within a process, writes are
    serialized by a thread lock, so a thread pool of teacher calls can share one store.
    """

    def __init__(self, root: str | os.PathLike, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._calls: dict[str, CallRecord] = {}
        self._records: dict[str, KnowledgeRecord] = {}
        self._writing = False
        self._logs: dict[str, _AppendLog] = {}
        self.reload()

    @property
    def calls_path(self) -> Path:
        return self.root / "calls.jsonl"

    @property
    def records_path(self) -> Path:
        return self.root / "records.jsonl"

    def reload(self, repair: bool = False) -> None:
        """(Re)read both files; with ``repair``, cut off a torn last line."""
        calls: dict[str, CallRecord] = {}
        for row in _read_jsonl(self.calls_path, repair):
            calls.setdefault(row["key"], CallRecord.from_json(row))
        records: dict[str, KnowledgeRecord] = {}
        for row in _read_jsonl(self.records_path, repair):
            rec = KnowledgeRecord.from_json(row)
            records.setdefault(rec.record_id, rec)
        self._calls, self._records = calls, records

    @contextmanager
    def writer(self) -> Iterator[KnowledgeStore]:
        """Hold the store's write lock; torn last lines left by a killed writer are repaired."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise StoreLocked(f"knowledge store {self.root} is being written by another process") from exc
            self.reload(repair=True)
            self._writing = True
            self._logs = {"calls": _AppendLog(self.calls_path, self.fsync),
                          "records": _AppendLog(self.records_path, self.fsync)}
            yield self
        finally:
            self._writing = False
            for append_log in self._logs.values():
                append_log.close()
            self._logs = {}
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            os.close(lock_fd)

    def _append(self, which: str, obj: dict[str, Any]) -> None:
        if not self._writing:
            raise StoreError("write to the knowledge store outside `with store.writer():`")
        self._logs[which].append(obj)

    # -- teacher calls ------------------------------------------------------------------------
    def get_call(self, key: str) -> CallRecord | None:
        """The stored call with this key, or None."""
        return self._calls.get(key)

    def put_call(self, call: CallRecord) -> bool:
        """Store a completed call; False (and nothing written) when the key is already stored."""
        with self._lock:
            if call.key in self._calls:
                return False
            self._append("calls", call.to_json())
            self._calls[call.key] = call
            return True

    def calls(self) -> list[CallRecord]:
        return list(self._calls.values())

    # -- knowledge records --------------------------------------------------------------------
    def get_record(self, rid: str) -> KnowledgeRecord | None:
        return self._records.get(rid)

    def put_record(self, record: KnowledgeRecord) -> bool:
        """Store a record; False (and nothing written) when its id is already stored."""
        with self._lock:
            rid = record.record_id
            if rid in self._records:
                return False
            self._append("records", record.to_json())
            self._records[rid] = record
            return True

    def records(self, kind: str | None = None, domain: str | None = None, *, fingerprint: str | None = None,
                status: str | None = None) -> list[KnowledgeRecord]:
        """Stored records, in the order they were written, filtered by the given fields."""
        return [r for r in self._records.values()
                if (kind is None or r.kind == kind) and (domain is None or r.domain == domain)
                and (fingerprint is None or r.fingerprint == fingerprint)
                and (status is None or r.status == status)]

    def __len__(self) -> int:
        return len(self._records)
