"""Batch-mode extraction: every session's teacher calls answered by batches, in rounds.

An extractor asks its calls one after the other (the rules loop's later turns depend on the
earlier answers), so one batch cannot hold them all. Each round therefore runs every pending
session against the store: a session whose calls are all stored finishes and its record is
written as in ``sync`` mode; a session reaching a call the store does not hold stops there
(:class:`CallDeferred`, raised by its :class:`BatchUnitTeacher`) and that call joins the round's
batch. The batch's answers are stored under the very keys a synchronous call has, and the next
round goes on from there: the rules extractor needs three rounds, thoughts one.

Lines a batch could not answer are asked again synchronously in the next round (the client's
retries; a rejection fails that session as in ``sync`` mode). Batches a killed run left behind
are finished first, by their ids (see :mod:`recbole_bundlellm.teacher.batch`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.knowledge.extraction import ExtractionRun
from recbole_bundlellm.knowledge.store import KnowledgeStore
from recbole_bundlellm.knowledge.summary import KindSummary
from recbole_bundlellm.progress import progress_bar
from recbole_bundlellm.teacher.batch import BatchOutcome, BatchRunner
from recbole_bundlellm.teacher.calls import ResponseSchema, TeacherReply
from recbole_bundlellm.teacher.client import Message, PreparedCall, TeacherClient, UnitTeacher
from recbole_bundlellm.teacher.errors import TeacherUnavailable

log = logging.getLogger(__name__)


class CallDeferred(BaseException):
    """A session reached a call the store does not hold: it waits for the round's batch.

    A ``BaseException``, like ``KeyboardInterrupt``: an extractor's ``except Exception`` (its
    own error handling) must not take it for a failure of the session.
    """

    def __init__(self, call: PreparedCall) -> None:
        super().__init__(call.key)
        self.call = call


class BatchUnitTeacher(UnitTeacher):
    """The teacher of one session in batch mode: answers from the store, defers the rest.

    ``fetched``: keys answered by a batch of this run (counted ``calls_batched``); ``retry_sync``:
    keys whose batch line failed, asked synchronously instead.
    """

    def __init__(self, client: TeacherClient, fetched: set[str], retry_sync: set[str]) -> None:
        super().__init__(client)
        self._fetched = fetched
        self._retry_sync = retry_sync

    def reply(self, messages: list[Message], *, max_tokens: int | None = None,
              temperature: float | None = None, schema: ResponseSchema | None = None) -> TeacherReply:
        """The stored answer; a synchronous call for a failed batch line; else :class:`CallDeferred`."""
        call = self._client.prepare(messages, max_tokens=max_tokens, temperature=temperature, schema=schema)
        record = self._client.lookup(call)
        if record is not None:
            return self.used(record, True, batched=record.key in self._fetched)
        if call.key in self._retry_sync:
            record, cached = self._client.complete(messages, max_tokens=max_tokens, temperature=temperature,
                                                   schema=schema)
            return self.used(record, cached)
        raise CallDeferred(call)


class BatchExtraction:
    """Extract the teacher kinds of one run through batches (``teacher.mode: batch``)."""

    def __init__(self, run: ExtractionRun, client: TeacherClient, store: KnowledgeStore,
                 progress: bool | None = None) -> None:
        self.run = run
        self.client = client
        self.runner = BatchRunner(client, store)
        self.progress = progress
        self.fetched: set[str] = set()
        self.retry_sync: set[str] = set()

    def extract(self, todo: Mapping[str, Sequence[Session]], summaries: Mapping[str, KindSummary]) -> None:
        """Run each kind's extractor on its sessions in ``todo`` until every one is stored."""
        for job in self.runner.open_jobs():  # a killed run's batches: polled again, not paid twice
            resumed = self.runner.finish(job, resumed=True)
            if resumed is not None:
                self._take(resumed)
        pending = {kind: list(sessions) for kind, sessions in todo.items() if sessions}
        stalled = 0
        while pending:
            needs = self._round(pending, summaries)
            if not needs:
                break
            limit = self.client.settings.batch_max_requests
            outcome = self.runner.finish(self.runner.submit(list(needs.values())[:limit]))
            assert outcome is not None  # only a killed run's job can be dropped
            self._take(outcome)
            # A batch that ran nothing (expired untouched) is tried again, but not for ever.
            stalled = 0 if outcome.stored or outcome.failed else stalled + 1
            if stalled > self.client.settings.max_retries:
                raise TeacherUnavailable(f"{self.client.where()}: {stalled} batches in a row ended without running "
                                         f"any request (last: {outcome.batch_id}, {outcome.status})")

    def _take(self, outcome: BatchOutcome) -> None:
        self.fetched |= outcome.stored
        self.retry_sync |= set(outcome.failed)

    def _round(self, pending: dict[str, list[Session]], summaries: Mapping[str, KindSummary]) -> dict[str, PreparedCall]:
        """Run every pending session once; finished ones are stored and dropped from ``pending``.
        Returns the calls the others wait for (distinct keys, in session order)."""
        needs: dict[str, PreparedCall] = {}
        for kind in list(pending):
            extractor = self.run.extractors[kind]
            waiting: list[Session] = []
            started = time.perf_counter()
            bar = progress_bar(total=len(pending[kind]), desc=f"{kind} (batch round)", unit="session",
                               enabled=self.progress)
            try:
                for session in pending[kind]:
                    unit = BatchUnitTeacher(self.client, self.fetched, self.retry_sync)
                    try:
                        outcome: Any = self.run.extract_one(extractor, session, unit)
                    except CallDeferred as deferred:
                        needs.setdefault(deferred.call.key, deferred.call)
                        waiting.append(session)
                    else:
                        with self.client.stats_lock:
                            self.client.stats.calls_cached += unit.calls_cached
                        self.run.store_outcome(kind, session, outcome, summaries[kind])
                    bar.update(1)
            finally:
                bar.close()
                summaries[kind].seconds += time.perf_counter() - started
            if waiting:
                pending[kind] = waiting
            else:
                del pending[kind]
        if needs:
            log.info("%s: %d sessions wait for %d calls", self.client.where(),
                     sum(len(v) for v in pending.values()), len(needs))
        return needs
