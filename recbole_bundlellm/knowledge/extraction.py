"""The extraction executor: extractors over sessions, through the store, teacher calls in parallel.

For each knowledge type it runs the extractor on every session that has no stored record for the
current configuration (its fingerprint). Each finished session is written to the store at once,
so a killed run resumes where it stopped and no completed teacher call is repeated (calls are
cached in the store as well). Sessions are fed to the worker threads lazily: at most
``concurrency`` sessions are in flight. When the teacher becomes unavailable, what they finish
is kept; on Ctrl-C (KeyboardInterrupt) or a store that cannot be written the run stops at once,
keeping what finished and abandoning the sessions in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.knowledge.extractor import Extraction, KnowledgeExtractor
from recbole_bundlellm.knowledge.records import KnowledgeRecord, reason_class, record_id
from recbole_bundlellm.knowledge.store import KnowledgeStore, StoreError
from recbole_bundlellm.knowledge.summary import KindSummary
from recbole_bundlellm.progress import progress_bar
from recbole_bundlellm.teacher.calls import now_iso
from recbole_bundlellm.teacher.errors import TeacherError, TeacherRequestError

log = logging.getLogger(__name__)


class ExtractorCrash(BundleLLMError, RuntimeError):
    """In strict mode: an extractor raised on a session (its exception is the ``__cause__``)."""


class _WrongReturn(TypeError):
    """``extract_session`` returned something other than an :class:`Extraction`."""


def _a(value: Any) -> str:
    """``a dict``, ``an int``, ``None``: what a wrong return value is, for a message."""
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


#: One session's outcome: the extraction (None after an extractor crash, which is logged where it
#: happens) and the teacher unit used.
Outcome = tuple["Extraction | None", Any]


class _DaemonWorkers:
    """Runs each submitted call on a daemon thread of its own (the executor never has more than
    ``concurrency`` in flight, so no queue is needed).

    Why not ThreadPoolExecutor: the interpreter joins its threads at exit, so after a Ctrl-C the
    process would still wait for every teacher call in flight (up to its timeout).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._started = 0

    def submit(self, fn: Callable[..., Outcome], *args: Any) -> Future[Outcome]:
        future: Future[Outcome] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - delivered to the waiting thread
                future.set_exception(exc)
            else:
                future.set_result(result)

        self._started += 1
        threading.Thread(target=run, name=f"{self.name}-{self._started}", daemon=True).start()
        return future


class ExtractionRun:
    """Extract one domain's knowledge of several types into ``store`` (open for writing).

    ``plugins`` maps each knowledge type to the plugin that provides its extractor (provenance);
    ``on_record`` is called with every record newly stored; ``strict`` lets an extractor's crash
    stop the run instead of being counted and retried on the next run.
    """

    def __init__(self, store: KnowledgeStore, domain: str, extractors: Mapping[str, KnowledgeExtractor],
                 fingerprints: Mapping[str, str], *, plugins: Mapping[str, str], client: Any = None,
                 concurrency: int = 1, strict: bool = False,
                 on_record: Callable[[KnowledgeRecord], None] | None = None, progress: bool | None = None) -> None:
        self.store = store
        self.domain = domain
        self.extractors = dict(extractors)
        self.fingerprints = dict(fingerprints)
        self.plugins = dict(plugins)
        self.client = client
        self.concurrency = concurrency
        self.strict = strict
        self.on_record = on_record
        self.progress = progress

    def pending(self, kind: str, sessions: Sequence[Session]) -> list[Session]:
        """The sessions with no stored record of ``kind`` for the current configuration."""
        fp = self.fingerprints[kind]
        return [s for s in sessions if self.store.get_record(record_id(kind, self.domain, s.session_id, fp)) is None]

    def extract(self, kind: str, todo: Sequence[Session], summary: KindSummary) -> None:
        """Run ``kind``'s extractor on ``todo``, storing each finished session; updates ``summary``."""
        if not todo:
            return
        extractor = self.extractors[kind]
        bar = progress_bar(total=len(todo), desc=kind, unit="session", enabled=self.progress)
        try:
            if not extractor.needs_teacher:
                for session in todo:
                    self.store_outcome(kind, session, self.extract_one(extractor, session, None), summary)
                    bar.update(1)
                return
            self._extract_concurrently(kind, extractor, todo, summary, bar)
        finally:
            bar.close()

    def _extract_concurrently(self, kind: str, extractor: KnowledgeExtractor, todo: Sequence[Session],
                              summary: KindSummary, bar: Any) -> None:
        workers = _DaemonWorkers(f"distill-{kind}")
        queue = iter(todo)
        running: dict[Future[Outcome], Session] = {}

        def submit_next() -> None:
            session = next(queue, None)
            if session is not None:
                running[workers.submit(self.extract_one, extractor, session, self.client.for_unit())] = session

        try:
            for _ in range(self.concurrency):
                submit_next()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                failure = self._collect(kind, done, running, summary, bar)
                if isinstance(failure, StoreError):
                    raise failure  # nothing more can be stored: the sessions in flight are abandoned
                if failure is not None:
                    self._drain(kind, running, summary, bar)
                    raise failure
                for _ in done:
                    submit_next()
        except KeyboardInterrupt:
            # Stop now: keep what finished, abandon the sessions in flight (daemon threads: the
            # process does not wait for their HTTP), start no other.
            self._keep_finished(kind, running, summary, bar)
            raise

    def _collect(self, kind: str, done: set[Future[Outcome]], running: dict[Future[Outcome], Session],
                 summary: KindSummary, bar: Any) -> BaseException | None:
        """Store the outcomes of ``done`` (removed from ``running`` once stored); the first error."""
        failure: BaseException | None = None
        for future in done:
            try:
                outcome = future.result()
            except BaseException as exc:  # noqa: BLE001 - stop after the others are stored
                failure = failure or exc
            else:
                self.store_outcome(kind, running[future], outcome, summary)
                bar.update(1)
            del running[future]
        return failure

    def _drain(self, kind: str, running: dict[Future[Outcome], Session], summary: KindSummary, bar: Any) -> None:
        """Keep what the sessions already in flight finish (their calls are paid for)."""
        wait(running)
        self._keep_finished(kind, running, summary, bar)

    def _keep_finished(self, kind: str, running: dict[Future[Outcome], Session], summary: KindSummary,
                       bar: Any) -> None:
        """Store the outcomes of the sessions in ``running`` that finished without an error."""
        for future, session in list(running.items()):
            if future.done() and future.exception() is None:
                self.store_outcome(kind, session, future.result(), summary)
                bar.update(1)
                del running[future]

    def extract_one(self, extractor: KnowledgeExtractor, session: Session, unit: Any) -> Outcome:
        """Run one session; a teacher rejection becomes a failed record, an extractor crash an error."""
        try:
            extraction = extractor.extract_session(session, unit)
            if not isinstance(extraction, Extraction):  # caught below: a wrong type is the plugin's bug too
                raise _WrongReturn(f"returned {_a(extraction)} on session {session.session_id}; extract_session "
                                   "must return an Extraction (Extraction('ok', content, text) or "
                                   "Extraction.failed(reason))")
            return extraction, unit
        except TeacherRequestError as exc:
            # Keep what the extractor had before the rejection (e.g. the first answer's difficulty).
            return Extraction.failed(f"teacher rejected the request: {exc}", **(exc.partial or {})), unit
        except (TeacherError, StoreError):
            raise  # the endpoint or the store failed, not this session: the run stops
        except Exception as exc:  # noqa: BLE001 - a third-party extractor's bug must not kill the run
            what = str(exc) if isinstance(exc, _WrongReturn) else \
                f"failed on session {session.session_id}: {type(exc).__name__}: {exc}"
            if self.strict:
                raise ExtractorCrash(f"extractor {extractor.name} (plugin {self.plugins.get(extractor.name, '?')}) "
                                     f"{what} (strict mode stops here; --debug shows the traceback)") from exc
            log.warning("extractor %s %s", extractor.name, what)
            return None, unit

    def store_outcome(self, kind: str, session: Session, outcome: Outcome, summary: KindSummary) -> None:
        """Store one session's outcome as its record (an extractor crash is counted, not stored)."""
        extraction, unit = outcome
        if extraction is None:
            summary.errors += 1
            return
        extractor = self.extractors[kind]
        provenance: dict[str, Any] = {"extractor": extractor.name, "version": extractor.version,
                                      "plugin": self.plugins[kind], "created_at": now_iso()}
        if unit is not None:
            provenance.update(teacher_model=unit.model, teacher_response_models=list(unit.response_models),
                              calls=list(unit.call_keys),
                              calls_made=unit.calls_made, calls_cached=unit.calls_cached,
                              **{name: getattr(unit, name) for name in ("calls_batched", "calls_structured")
                                 if getattr(unit, name, 0)},
                              usage={"prompt_tokens": unit.usage.prompt_tokens,
                                     "completion_tokens": unit.usage.completion_tokens})
        record = KnowledgeRecord(kind, self.domain, session.session_id, self.fingerprints[kind], extraction.status,
                                 extraction.content, extraction.text if extraction.status == "ok" else "",
                                 extraction.reason, session.session_id, provenance)
        if self.store.put_record(record):
            summary.new += 1
            if self.on_record is not None:
                self.on_record(record)

    def count(self, kind: str, sessions: Sequence[Session], summary: KindSummary) -> None:
        """Fill ``summary``'s ok / failed counts and failure reasons from the store."""
        wanted = {s.session_id for s in sessions}
        reasons: Counter[str] = Counter()
        for rec in self.store.records(kind, self.domain, fingerprint=self.fingerprints[kind]):
            if rec.unit not in wanted:
                continue
            if rec.ok:
                summary.ok += 1
            else:
                summary.failed += 1
                reasons[reason_class(rec.reason)] += 1
        summary.failure_reasons = dict(reasons)

    def run_kind(self, kind: str, todo: Sequence[Session], summary: KindSummary) -> None:
        """:meth:`extract`, timing it into ``summary.seconds``."""
        t0 = time.perf_counter()
        try:
            self.extract(kind, todo, summary)
        finally:
            summary.seconds = time.perf_counter() - t0
