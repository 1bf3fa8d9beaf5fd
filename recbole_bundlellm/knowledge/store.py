"""The knowledge store: append-only JSON Lines on disk, safe to kill at any point.

Layout of a store folder::

    calls.jsonl      one completed teacher call per line (CallRecord), keyed by request hash
    records.jsonl    one knowledge record per line (KnowledgeRecord), keyed by record_id
    batches.jsonl    batch mode: one line per step of a batch (written, uploaded, created, done)
    batches/         batch mode: each batch's requests as sent (JSONL) and as prepared (to resume)
    sets/            knowledge sets derived by sampling (rewritten atomically; recomputable)
    runs/            one JSON summary per distillation run
    .lock            held (flock) by the process writing the store

Why it survives a SIGKILL: every line is written with one ``write`` on a file opened with
``O_APPEND`` and then fsynced, before the work that depends on it goes on. A kill can only
leave a torn *last* line (no trailing newline), which is cut off and reported on the next
open; every complete line is a finished call or record. Keys are checked in memory before
writing, so nothing is stored twice.

Why it survives a full disk: an append that fails (ENOSPC, a short write, a failed fsync) is
taken back (the file is truncated to where the line began) and raises :class:`StoreError`, so
the next append never lands after a partial line. If even that fails, the file takes no more
appends until the next writer cuts the unfinished line off.

A damaged line in the middle (not JSON, or JSON that is not a call or a record) is never
skipped silently: opening the store moves it to ``<file>.damaged`` (with its line number),
rewrites the file atomically from the good lines and logs a warning naming file and lines.
When it cannot (a read-only folder, another process writing), opening fails naming file and line.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.fileio import FileLocked, atomic_write_bytes, file_lock, os_error_reason, write_errors
from recbole_bundlellm.knowledge.records import KnowledgeRecord
from recbole_bundlellm.teacher.batch import batch_event
from recbole_bundlellm.teacher.calls import CallRecord, now_iso

log = logging.getLogger(__name__)


class StoreError(BundleLLMError, RuntimeError):
    """A knowledge store that cannot be opened or written as asked."""


class StoreLocked(StoreError):
    """Another process is writing this store."""


def write_error(root: Path, exc: OSError, detail: str = "") -> StoreError:
    """The error of a failed write into the store at ``root``."""
    return StoreError(f"cannot write to the knowledge store {root}: {os_error_reason(exc)}"
                      + (f" ({detail})" if detail else ""))


@contextmanager
def store_write_errors(root: str | os.PathLike) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing into the store at ``root`` into a :class:`StoreError`."""
    with write_errors(lambda why: StoreError(f"cannot write to the knowledge store {root}: {why}"), errnos=None):
        yield


def is_store_dir(folder: Path) -> bool:
    """Whether ``folder`` is a knowledge store that has been written (its lock file and a store file)."""
    return (folder / ".lock").is_file() and any((folder / n).is_file() for n in ("calls.jsonl", "records.jsonl"))


def enclosing_store(path: str | os.PathLike) -> Path | None:
    """The knowledge store folder ``path`` lies in (at any depth), or None."""
    target = Path(path).resolve()
    return next((folder for folder in target.parents if is_store_dir(folder)), None)


@dataclass
class _Lines:
    """What one JSONL file of the store holds."""

    good: list[tuple[bytes, Any]] = field(default_factory=list)  # raw line, parsed object
    damaged: list[tuple[int, bytes, str]] = field(default_factory=list)  # line number, raw line, why
    tail: bytes = b""  # an unfinished last line (a write cut short by a kill)

    def first_damage(self, path: Path) -> str:
        lineno, _, why = self.damaged[0]
        return f"{path}:{lineno}: damaged line ({why})"


def _read_lines(path: Path, parse: Callable[[Any], Any], what: str) -> _Lines:
    """The lines of ``path``, each parsed by ``parse`` (``TypeError`` or ``ValueError``: not a ``what``)."""
    lines = _Lines()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return lines
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {os_error_reason(exc)}") from exc
    complete, _, lines.tail = raw.rpartition(b"\n")
    for lineno, line in enumerate(complete.split(b"\n") if complete else [], start=1):
        if not line.strip():
            continue
        try:
            lines.good.append((line, parse(json.loads(line))))
        except json.JSONDecodeError as exc:
            lines.damaged.append((lineno, line, f"not JSON: {exc.msg}"))
        except (TypeError, ValueError) as exc:  # JSON of the wrong shape
            lines.damaged.append((lineno, line, f"not a {what}: {exc}"))
    return lines


def _repair(path: Path, lines: _Lines) -> None:
    """Cut a torn tail off and move damaged lines to ``<path>.damaged``; the caller holds the lock."""
    if lines.tail:
        log.warning("%s: cut off an incomplete last line of %d bytes (an interrupted write)", path, len(lines.tail))
    if lines.damaged:
        _move_aside(path, lines)
    elif lines.tail:
        with open(path, "r+b") as f:
            f.truncate(f.seek(0, os.SEEK_END) - len(lines.tail))


def _move_aside(path: Path, lines: _Lines) -> None:
    """Append the damaged lines (numbered) to ``<path>.damaged``, then rewrite ``path`` atomically
    from the good ones: a crash in between leaves them in both, never in neither."""
    aside = path.with_name(path.name + ".damaged")
    entries = [f"# {now_iso()}: moved from {path.name} (line numbers of that file then)\n".encode()]
    entries += [f"{lineno}\t".encode() + line + b"\n" for lineno, line, _ in lines.damaged]
    with open(aside, "ab") as f:
        f.write(b"".join(entries))
        f.flush()
        os.fsync(f.fileno())
    atomic_write_bytes(path, b"".join(line + b"\n" for line, _ in lines.good))
    for lineno, _, why in lines.damaged[:3]:  # the first few say why; the numbers of all follow
        log.warning("%s:%d: damaged line (%s)", path, lineno, why)
    n = len(lines.damaged)
    log.warning("%s: moved %d damaged line%s (%s) to %s; the %d good lines are kept", path, n, "s" * (n > 1),
                ", ".join(str(lineno) for lineno, _, _ in lines.damaged), aside.name, len(lines.good))


class _AppendLog:
    """One append-only JSONL file with whole-line appends: a failed one is taken back."""

    def __init__(self, path: Path, fsync: bool) -> None:
        self.path = path
        self.fsync = fsync
        self._fd: int | None = None
        self._broken: str | None = None  # why no more appends are allowed

    def append(self, obj: dict[str, Any]) -> None:
        """Append one line; on any failure the file is as before and :class:`StoreError` is raised.
        The caller serializes appends (and holds the store's lock: no other process appends)."""
        if self._broken is not None:
            raise StoreError(self._broken)
        line = (json.dumps(obj, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        with store_write_errors(self.path.parent):
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            start = os.fstat(self._fd).st_size
        try:
            self._write(line)
        except BaseException as exc:  # also a Ctrl-C between two partial writes
            self._take_back(start)
            if isinstance(exc, OSError):
                raise write_error(self.path.parent, exc, f"{self.path.name}: the unfinished line was taken back; "
                                                         "every line before it is kept") from exc
            raise

    def _write(self, line: bytes) -> None:
        assert self._fd is not None
        view = memoryview(line)
        while view:  # a short write on a nearly full disk: the rest fails with ENOSPC, or goes
            n = os.write(self._fd, view)
            if n <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[n:]
        if self.fsync:
            os.fsync(self._fd)

    def _take_back(self, size: int) -> None:
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, size)
        except OSError as exc:
            self._broken = (f"{self.path}: an unfinished line at byte {size} could not be taken back "
                            f"({os_error_reason(exc)}); nothing more is written to it, and the next run cuts it off")
            log.error("%s", self._broken)

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
        self._batch_events: list[dict[str, Any]] = []
        self._writing = False
        self._logs: dict[str, _AppendLog] = {}
        self.reload()

    @property
    def calls_path(self) -> Path:
        return self.root / "calls.jsonl"

    @property
    def records_path(self) -> Path:
        return self.root / "records.jsonl"

    @property
    def batches_path(self) -> Path:
        return self.root / "batches.jsonl"

    def reload(self, repair: bool = False) -> None:
        """(Re)read both files. With ``repair`` (the caller holds the write lock), cut off a torn
        last line and move damaged lines aside; without, damaged lines make it take the lock to do
        so, or raise :class:`StoreError` naming file and line when it cannot."""
        files = {self.calls_path: _read_lines(self.calls_path, CallRecord.from_json, "teacher call"),
                 self.records_path: _read_lines(self.records_path, KnowledgeRecord.from_json, "knowledge record"),
                 self.batches_path: _read_lines(self.batches_path, batch_event, "batch event")}
        damaged = [(path, lines) for path, lines in files.items() if lines.damaged]
        if damaged and not repair:
            try:
                with self._exclusive():
                    self.reload(repair=True)
                return
            except StoreError as exc:
                path, lines = damaged[0]
                raise StoreError(f"{lines.first_damage(path)}; it cannot be moved aside now: {exc}") from exc
        if repair:
            with self._lock, store_write_errors(self.root):
                self._close_logs()  # why: a rewritten file is a new file; appends must go to it
                for path, lines in files.items():
                    _repair(path, lines)
        calls: dict[str, CallRecord] = {}
        for _, call in files[self.calls_path].good:
            calls.setdefault(call.key, call)
        records: dict[str, KnowledgeRecord] = {}
        for _, rec in files[self.records_path].good:
            records.setdefault(rec.record_id, rec)
        self._calls, self._records = calls, records
        self._batch_events = [event for _, event in files[self.batches_path].good]

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the ``flock`` on ``.lock`` (:class:`StoreLocked` when another process does)."""
        with ExitStack() as stack:
            try:
                with store_write_errors(self.root):
                    stack.enter_context(file_lock(self.root / ".lock", timeout=0))
            except FileLocked as exc:
                raise StoreLocked(f"knowledge store {self.root} is being written by another process") from exc
            yield

    @contextmanager
    def writer(self) -> Iterator[KnowledgeStore]:
        """Hold the store's write lock; torn last lines left by a killed writer are cut off and
        damaged lines moved aside. A store that cannot be written is a :class:`StoreError` here,
        before any work."""
        with store_write_errors(self.root):
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK | os.X_OK):  # else only the run's end would find out
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self.root))
        with self._exclusive():
            self.reload(repair=True)
            with self._lock:
                self._writing = True
                self._logs = {"calls": _AppendLog(self.calls_path, self.fsync),
                              "records": _AppendLog(self.records_path, self.fsync),
                              "batches": _AppendLog(self.batches_path, self.fsync)}
            try:
                yield self
            finally:
                # Under the thread lock: a worker that a stopped run left behind may be appending.
                with self._lock:
                    self._writing = False
                    self._close_logs()
                    self._logs = {}

    def _close_logs(self) -> None:
        for append_log in self._logs.values():
            append_log.close()

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

    # -- batches (teacher.mode: batch) ----------------------------------------------------------
    def batch_events(self) -> list[dict[str, Any]]:
        """The steps of every batch, in the order they were written (see :mod:`~recbole_bundlellm.teacher.batch`)."""
        return list(self._batch_events)

    def put_batch_event(self, event: dict[str, Any]) -> None:
        """Append one step of a batch, durably (before the step that depends on it)."""
        batch_event(event)  # a wrong event is a bug here, not a damaged line on the next open
        with self._lock:
            self._append("batches", event)
            self._batch_events.append(dict(event))

    def write_batch_file(self, name: str, data: bytes) -> Path:
        """Write ``batches/<name>`` atomically (a batch's requests, before it is uploaded)."""
        if "/" in name or name.startswith("."):
            raise ValueError(f"not a batch file name: {name!r}")
        if not self._writing:
            raise StoreError("write to the knowledge store outside `with store.writer():`")
        path = self.root / "batches" / name
        with store_write_errors(self.root):
            path.parent.mkdir(exist_ok=True)
            atomic_write_bytes(path, data)
        return path

    def read_batch_file(self, name: str) -> bytes:
        """The bytes of ``batches/<name>`` (:class:`StoreError` when it is gone)."""
        path = self.root / "batches" / name
        try:
            return path.read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {os_error_reason(exc)}") from exc

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
