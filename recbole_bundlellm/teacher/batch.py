"""Batch mode (``teacher.mode: batch``): calls asked through the Files and Batches APIs.

One batch goes through four steps, each written to the store's batch log (``batches.jsonl``)
before the next one starts:

1. ``written``: the prepared calls are written to ``batches/<id>.calls.jsonl`` (what the client
   needs to store their answers) and the request lines to ``batches/<id>.input.jsonl`` (exactly
   what is uploaded: ``custom_id`` is the call key, ``body`` the synchronous request's body);
2. ``uploaded``: the input file is uploaded (``files.create(purpose="batch")``);
3. ``created``: the batch is created (``batches.create(endpoint="/v1/chat/completions",
   completion_window="24h")``), its id logged;
4. ``done``: it was polled to its end and every answer it holds is stored in ``calls.jsonl``,
   keyed as a synchronous call would be (so a later synchronous run finds them all).

Why it is safe to kill: a run killed while polling finds the batch ``created`` and polls the
same id again; killed between creating the batch and logging its id, it finds the batch made of
its input file (``batches.list``) and polls that; killed earlier, no batch exists, nothing was
paid, and the calls (still missing from the store) go into the next batch. Nothing is paid twice.

A line that failed (an error status, or no usable completion) is not stored: the caller asks it
again synchronously, with the client's retries, so a request the endpoint rejects for good
fails its session exactly as in ``sync`` mode. Lines a batch never ran (``expired``) go into the
next batch. A batch that ``failed`` (its input refused) or was ``cancelled`` stops the run
(:class:`~recbole_bundlellm.teacher.errors.TeacherBatchError`), with what it finished stored.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from recbole_bundlellm.teacher.calls import CallCache, ResponseSchema, now_iso, stable_hash
from recbole_bundlellm.teacher.errors import TeacherBatchError, TeacherRequestError

if TYPE_CHECKING:  # the client imports nothing from here; this module uses a client it is given
    from recbole_bundlellm.teacher.client import PreparedCall, TeacherClient

log = logging.getLogger(__name__)

#: The steps of a batch, in order, as its log lines name them.
BATCH_EVENTS = ("written", "uploaded", "created", "done")
#: Where a batch ends; any other status is still running.
TERMINAL = ("completed", "failed", "expired", "cancelled")
ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"


def batch_event(data: Any) -> dict[str, Any]:
    """``data`` when it is one step of a batch log (a dict with a ``local_id`` and a known ``event``);
    ``TypeError`` otherwise (a damaged line)."""
    if not isinstance(data, dict):
        raise TypeError(f"a JSON {type(data).__name__}, not an object")
    if not isinstance(data.get("local_id"), str) or data.get("event") not in BATCH_EVENTS:
        raise TypeError("no local_id or no known event")
    return data


class BatchLog(CallCache, Protocol):
    """Where batch mode keeps its steps and files (the knowledge store is one); also a call cache."""

    def batch_events(self) -> list[dict[str, Any]]: ...

    def put_batch_event(self, event: dict[str, Any]) -> None: ...

    def write_batch_file(self, name: str, data: bytes) -> Path: ...

    def read_batch_file(self, name: str) -> bytes: ...


@dataclass
class BatchJob:
    """One batch as its log lines tell it (the fold of its events)."""

    local_id: str
    keys: list[str]
    state: str  # the last step: one of BATCH_EVENTS
    input_file_id: str | None = None
    batch_id: str | None = None
    status: str | None = None  # the batch's own status at its end

    @property
    def open(self) -> bool:
        return self.state != "done"


def batch_jobs(events: Sequence[Mapping[str, Any]]) -> dict[str, BatchJob]:
    """Every batch of a log by local id, in the order they were written."""
    jobs: dict[str, BatchJob] = {}
    for event in events:
        local_id = event["local_id"]
        if event["event"] == "written":
            jobs[local_id] = BatchJob(local_id, list(event.get("keys") or []), "written")
            continue
        job = jobs.get(local_id)
        if job is None:  # a step without its first line: nothing to resume from
            continue
        job.state = event["event"]
        job.input_file_id = event.get("input_file_id", job.input_file_id)
        job.batch_id = event.get("batch_id", job.batch_id)
        job.status = event.get("status", job.status)
    return jobs


@dataclass
class BatchOutcome:
    """What one finished batch gave: the keys stored, the lines that failed (key -> why) and the
    keys it never ran (an expired batch's)."""

    batch_id: str
    status: str
    stored: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)


def _call_json(call: PreparedCall) -> dict[str, Any]:
    schema = {"name": call.schema.name, "schema": call.schema.schema} if call.schema is not None else None
    return {"key": call.key, "messages": call.messages, "params": call.params, "schema": schema,
            "dialect": call.dialect}


def _call_of(data: Mapping[str, Any]) -> PreparedCall:
    from recbole_bundlellm.teacher.client import PreparedCall

    schema = data.get("schema")
    return PreparedCall(data["key"], list(data["messages"]), dict(data["params"]),
                        ResponseSchema(schema["name"], schema["schema"]) if schema else None, data.get("dialect"))


class BatchRunner:
    """Submits, resumes and reads back batches for one :class:`~recbole_bundlellm.teacher.client.TeacherClient`.

    ``log`` is the client's store (a :class:`BatchLog`, open for writing). ``sleep`` is how it
    waits between polls (a test may pass its own).
    """

    def __init__(self, client: TeacherClient, log: BatchLog, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.log = log
        self.sleep = sleep

    def open_jobs(self) -> list[BatchJob]:
        """The batches a killed run left unfinished, oldest first."""
        return [job for job in batch_jobs(self.log.batch_events()).values() if job.open]

    def submit(self, calls: Sequence[PreparedCall]) -> BatchJob:
        """Write and upload one batch of ``calls`` (distinct keys); :meth:`finish` creates and runs it."""
        if not calls:
            raise ValueError("a batch needs at least one call")
        keys = [call.key for call in calls]
        local_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{stable_hash(keys, 8)}"
        self.log.write_batch_file(f"{local_id}.calls.jsonl", _jsonl(_call_json(c) for c in calls))
        self.log.write_batch_file(f"{local_id}.input.jsonl", _jsonl(
            {"custom_id": c.key, "method": "POST", "url": ENDPOINT, "body": self.client.request_body(c)} for c in calls))
        self.log.put_batch_event({"local_id": local_id, "event": "written", "keys": keys, "n": len(keys),
                                  "at": now_iso()})
        job = BatchJob(local_id, keys, "written")
        self._upload(job)
        return job

    def finish(self, job: BatchJob, *, resumed: bool = False) -> BatchOutcome | None:
        """Bring ``job`` to its end: create it if it is not yet, poll it, store its answers.

        ``resumed``: the job is a killed run's. Such a job is polled again when its batch exists on
        the endpoint (logged, or found by its input file); one that never got that far cost
        nothing and is abandoned (None): the calls still missing go into the next batch, as the
        configuration now asks them.
        """
        started = time.monotonic()
        try:
            if resumed:
                if job.state == "uploaded":
                    assert job.input_file_id is not None
                    found = self._batch_of_file(job.input_file_id)  # created, but killed before logging its id
                    if found is not None:
                        self._log_created(job, str(found.id))
                if job.state != "created":
                    self._done(job, BatchOutcome(job.batch_id or "", "abandoned"))
                    log.info("%s: dropped batch %s of a killed run: it was never created (nothing paid)",
                             self.client.where(), job.local_id)
                    return None
                with self.client.stats_lock:
                    self.client.stats.batches_resumed += 1
                log.info("%s: resuming batch %s (%d requests)", self.client.where(), job.batch_id, len(job.keys))
            else:
                self._create(job)
            batch = self._poll(job)
            return self._read_back(job, batch)
        finally:
            with self.client.stats_lock:
                self.client.stats.batch_seconds += time.monotonic() - started

    # -- steps ------------------------------------------------------------------------------------
    def _upload(self, job: BatchJob) -> None:
        """Upload ``job``'s input file (step ``uploaded``)."""
        api = self.client.api
        self.client.check_model()
        data = self.log.read_batch_file(f"{job.local_id}.input.jsonl")
        uploaded, _ = self.client.with_retries(
            lambda: api.files.create(file=(f"{job.local_id}.jsonl", data, "application/jsonl"), purpose="batch"),
            "the batch input upload (POST /files; does this endpoint have the Files and Batches APIs? "
            "teacher.mode: sync needs neither)", rejected=TeacherBatchError)
        job.input_file_id, job.state = str(uploaded.id), "uploaded"
        self.log.put_batch_event({"local_id": job.local_id, "event": "uploaded", "input_file_id": job.input_file_id,
                                  "at": now_iso()})

    def _create(self, job: BatchJob) -> None:
        """Create the batch of ``job``'s uploaded file (step ``created``)."""
        if job.state == "created":
            return
        assert job.state == "uploaded" and job.input_file_id is not None
        input_file_id = job.input_file_id
        batch, _ = self.client.with_retries(
            lambda: self.client.api.batches.create(input_file_id=input_file_id, endpoint=ENDPOINT,
                                                   completion_window=COMPLETION_WINDOW,
                                                   metadata={"bundlellm_batch": job.local_id}),
            "the batch (POST /batches)", rejected=TeacherBatchError)
        with self.client.stats_lock:
            self.client.stats.batches_created += 1
        self._log_created(job, str(batch.id))
        log.info("%s: batch %s created (%d requests)", self.client.where(), job.batch_id, len(job.keys))

    def _log_created(self, job: BatchJob, batch_id: str) -> None:
        job.batch_id, job.state = batch_id, "created"
        self.log.put_batch_event({"local_id": job.local_id, "event": "created", "batch_id": batch_id, "at": now_iso()})

    def _batch_of_file(self, input_file_id: str) -> Any | None:
        """The batch already made of this input file (newest first, the first page), or None."""
        try:
            page, _ = self.client.with_retries(lambda: self.client.api.batches.list(limit=100),
                                               "the batch list (GET /batches)", rejected=TeacherBatchError)
        except TeacherBatchError as exc:  # an endpoint that lists none: create it (paid once more at worst)
            log.warning("%s", exc)
            return None
        return next((b for b in getattr(page, "data", None) or [] if b.input_file_id == input_file_id), None)

    def _poll(self, job: BatchJob) -> Any:
        """Retrieve ``job``'s batch until it ends (every ``batch_poll_interval`` seconds)."""
        assert job.batch_id is not None
        batch_id, interval = job.batch_id, self.client.settings.batch_poll_interval
        last_said = 0.0
        while True:
            batch, _ = self.client.with_retries(lambda: self.client.api.batches.retrieve(batch_id),
                                                f"the batch status (GET /batches/{batch_id})",
                                                rejected=TeacherBatchError)
            if batch.status in TERMINAL:
                return batch
            if time.monotonic() - last_said >= 60:  # a line a minute at most, whatever the interval
                counts = batch.request_counts
                done = f"{counts.completed + counts.failed}/{counts.total}" if counts is not None else "?"
                log.info("%s: batch %s %s (%s requests done)", self.client.where(), batch_id, batch.status, done)
                last_said = time.monotonic()
            self.sleep(interval)

    def _read_back(self, job: BatchJob, batch: Any) -> BatchOutcome:
        """Store the answers of an ended batch; log it done; raise when it failed or was cancelled."""
        outcome = BatchOutcome(str(batch.id), str(batch.status))
        if batch.status == "failed":
            errors = getattr(getattr(batch, "errors", None), "data", None) or []
            why = "; ".join(f"{getattr(e, 'code', None) or 'error'}: {getattr(e, 'message', '')}" for e in errors[:3])
            self._done(job, outcome)
            raise TeacherBatchError(f"{self.client.where()}: batch {batch.id} failed ({why or 'no reason given'}); "
                                    "nothing of it was run")
        calls = {c.key: c for c in map(_call_of, _read_jsonl(self.log.read_batch_file(f"{job.local_id}.calls.jsonl")))}
        answered: set[str] = set()
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            for line in self._download(file_id):
                key = str(line.get("custom_id"))
                call = calls.get(key)
                if call is None or key in answered:
                    continue
                answered.add(key)
                body, why = _line_body(line)
                if body is not None:
                    try:
                        self.log.put_call(self.client.batch_record(call, body, str(batch.id)))
                        outcome.stored.add(key)
                        continue
                    except TeacherRequestError as exc:  # a 200 without a usable completion
                        why = str(exc)
                outcome.failed[key] = why or "failed"
        outcome.missing = set(calls) - answered
        with self.client.stats_lock:
            self.client.stats.batch_line_errors += len(outcome.failed)
        self._done(job, outcome)
        log.info("%s: batch %s %s: %d answers stored, %d failed (asked again synchronously), %d not run",
                 self.client.where(), batch.id, batch.status, len(outcome.stored), len(outcome.failed),
                 len(outcome.missing))
        if batch.status == "cancelled":
            raise TeacherBatchError(f"{self.client.where()}: batch {batch.id} was cancelled; its {len(outcome.stored)} "
                                    "answers are stored; run the same command again to send the rest in a new batch")
        return outcome

    def _done(self, job: BatchJob, outcome: BatchOutcome) -> None:
        job.state, job.status = "done", outcome.status
        self.log.put_batch_event({"local_id": job.local_id, "event": "done", "status": outcome.status,
                                  "stored": len(outcome.stored), "failed": len(outcome.failed),
                                  "missing": len(outcome.missing), "at": now_iso()})

    def _download(self, file_id: str) -> list[dict[str, Any]]:
        response, _ = self.client.with_retries(lambda: self.client.api.files.content(file_id),
                                               f"the batch result download (GET /files/{file_id}/content)",
                                               rejected=TeacherBatchError)
        return _read_jsonl(response.content)


def _line_body(line: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """A result line's completion body, or None and why the line failed."""
    response = line.get("response") or {}
    error = line.get("error")
    status = response.get("status_code") if isinstance(response, dict) else None
    body = response.get("body") if isinstance(response, dict) else None
    if not error and status == 200 and isinstance(body, dict):
        return body, ""
    if isinstance(error, dict) and error:
        return None, f"{error.get('code') or 'error'}: {error.get('message') or ''}".strip()
    message = body.get("error", {}).get("message", "") if isinstance(body, dict) and isinstance(body.get("error"), dict) \
        else ""
    return None, f"http_{status}: {message}".strip()


def _jsonl(rows: Any) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows).encode("utf-8")


def _read_jsonl(data: bytes) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL text; lines that are not one are skipped (a result file is the
    endpoint's: what cannot be read there counts as not run, and goes into the next batch)."""
    rows = []
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError:
            log.warning("skipped a batch result line that is not JSON: %r", raw[:80])
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
