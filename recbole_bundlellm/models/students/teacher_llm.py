"""TeacherLLM: the teacher as a bundle generator, so the student can be measured against it.

Each session is asked of the teacher's OpenAI-compatible endpoint (the ``teacher:`` block) with
exactly the student's prompt (:class:`~recbole_bundlellm.models.students.bundlellm.BundleLLM`'s
``prompt_mode`` / ``prompt_format`` and its functions), and the answer is read by the student's
parser. Every call goes through :class:`~recbole_bundlellm.teacher.client.TeacherClient` into the
knowledge store at ``knowledge_dir`` (the same call cache distillation uses), so a re-run makes no
call at all, and a killed run resumes without paying for a finished call twice.

A session whose call fails for good (rejected, or still failing after the client's retries) is a
failed session with its reason, and the run goes on; it is not stored, so a re-run asks only
those. An answer the parser cannot use is a failed session too (its call stays stored: a re-run
reads the same answer). When the teacher fails ``teacher_max_failures_in_a_row`` sessions in a
row it is taken to be down and the run stops (the store keeps every answer it got).

``info.teacher`` in metrics.json: the teacher's settings (never its key), the sessions answered
and failed, ``calls`` (answers used), ``calls_made`` over HTTP in this run, ``calls_cached``
(served from the store), retries and errors, ``usage`` (prompt / completion tokens of every
answer used, as paid when it was first asked: the method's cost), ``usage_made`` (this run's own
spend; zero on a re-run), and ``cost`` / ``cost_made`` at ``teacher.price_input_per_1m`` /
``price_output_per_1m`` when the settings give a price (else tokens only).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.generation.examples import NearestSessions
from recbole_bundlellm.knowledge.store import KnowledgeStore
from recbole_bundlellm.models.base import BundleGenerator, BundlePrediction
from recbole_bundlellm.models.students.bundlellm import (
    check_prompt_mode,
    parse_prediction,
    prompt_style,
    session_prompts,
    shot_views,
)
from recbole_bundlellm.progress import progress_bar
from recbole_bundlellm.settings import SettingsError, load_settings
from recbole_bundlellm.teacher.calls import TeacherReply, Usage
from recbole_bundlellm.teacher.client import TeacherClient
from recbole_bundlellm.teacher.errors import TeacherCredentialsRefused, TeacherRequestError, TeacherUnavailable
from recbole_bundlellm.teacher.settings import TeacherSettings, redact_url

Message = dict[str, str]
#: What asking one session gave: the reply, or why the call failed for good.
Outcome = Union[TeacherReply, TeacherRequestError, TeacherUnavailable]


log = logging.getLogger(__name__)

def teacher_settings(config: Any) -> TeacherSettings:
    """The ``teacher:`` block, checked, with an endpoint (``base_url`` or ``$OPENAI_BASE_URL``)."""
    settings = load_settings(TeacherSettings, config["teacher"], "teacher")
    try:
        settings.resolved_base_url()
    except ValueError as exc:
        raise SettingsError(f"TeacherLLM: {exc}") from None
    if settings.mode == "batch":  # a distillation's block, shared: said, not refused
        log.warning("TeacherLLM: teacher.mode: batch applies to `bundlellm distill`; TeacherLLM asks synchronously")
    return settings


def _usage_json(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


class TeacherLLM(BundleGenerator):
    """The teacher endpoint prompted as the student: prompt → cached call → parsed bundles."""

    #: It asks the teacher's endpoint (tests run it against a FakeTeacherServer).
    needs_teacher = True

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        # The teacher gets the student's zero-/one-shot prompt only: a strategy's views are cut to
        # the student's token budget and may retrieve by the student's own embeddings.
        for key in ("adaptation", "knowledge_use"):
            if config[key]:
                raise SettingsError(f"TeacherLLM prompts as the zero-/one-shot student (prompt_mode); "
                                    f"{key} is for students: remove it")
        self.prompt_mode = check_prompt_mode(config)
        self.style = prompt_style(config)
        self.settings = teacher_settings(config)
        self.store_dir = Path(config["knowledge_dir"]).resolve()  # before the trainer changes directory
        self.max_failures_in_a_row: int | None = config["teacher_max_failures_in_a_row"]
        self.examples: NearestSessions | None = None
        # One store and one client for the model's life, so valid and test add up in run_info.
        self._store: KnowledgeStore | None = None
        self._client: TeacherClient | None = None
        self._used = Usage()  # tokens of every answer used, from the store or not
        self._answered = self._failed_calls = self._unparsed = 0
        self.run_info = {
            "prompt_version": self.style.version,
            "prompt_mode": self.prompt_mode,
            "knowledge_dir": str(self.store_dir),
            "teacher": self._teacher_info(),
        }

    def fit_bundles(self, train_sessions: Sequence[Session]) -> None:
        if self.prompt_mode == "one_shot":
            self.examples = NearestSessions(train_sessions)

    # ------------------------------------------------------------------ asking

    def generate_bundles(self, sessions: Sequence[Session]) -> list[BundlePrediction]:
        views = shot_views(sessions, self.prompt_mode, self.examples)
        prompts = session_prompts(sessions, views, self.style, adapted=False)
        if self._store is None:
            self._store = KnowledgeStore(self.store_dir)
        # The write lock only while asking: the client stores each new call before it is used.
        with self._store.writer():
            if self._client is None:
                self._client = TeacherClient(self.settings, self._store)
            outcomes = self._ask(self._client, prompts)
        out = [self._prediction(s, v.examples, o) for s, v, o in zip(sessions, views, outcomes)]
        self.run_info["teacher"] = self._teacher_info()
        return out

    def _ask(self, client: TeacherClient, prompts: Sequence[list[Message]]) -> list[Outcome]:
        """Every prompt's outcome, in order, ``teacher.concurrency`` calls at a time.

        Daemon threads, as distillation's: after Ctrl-C the process does not wait for the calls in
        flight (up to their timeout); every call finished before is in the store already. After a
        fatal outcome no call starts, and those in flight finish (and are stored) before it is raised.
        """
        results: list[Outcome | None] = [None] * len(prompts)
        done: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()

        def start(index: int) -> None:
            def call() -> None:
                try:
                    outcome: Any = client.reply(prompts[index])
                except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which judges it
                    outcome = exc
                done.put((index, outcome))

            threading.Thread(target=call, name=f"teacher-llm-{index}", daemon=True).start()

        bar = progress_bar(total=len(prompts), desc=f"{type(self).__name__} sessions", unit="session",
                           enabled=self.config["show_progress"] or None)
        # The main thread hands out the sessions, one as each call ends: once it stops, no other starts.
        pending = iter(range(len(prompts)))
        running = 0
        for index in itertools.islice(pending, self.settings.concurrency):
            start(index)
            running += 1
        fatal: BaseException | None = None
        in_a_row = 0
        try:
            while running:
                index, outcome = done.get()
                running -= 1
                bar.update(1)
                if isinstance(outcome, (TeacherReply, TeacherRequestError)):
                    results[index] = outcome
                    in_a_row = 0  # the endpoint answered (a rejection is of one request only)
                elif isinstance(outcome, TeacherCredentialsRefused):
                    fatal = fatal or outcome  # every other call would be refused too
                elif isinstance(outcome, TeacherUnavailable):
                    results[index] = outcome
                    in_a_row += 1
                    limit = self.max_failures_in_a_row
                    if fatal is None and limit is not None and in_a_row >= limit:
                        fatal = self._down(in_a_row, outcome)  # the calls in flight finish and are stored
                else:  # the endpoint serves another model, the store cannot be written, a bug
                    fatal = fatal or outcome
                following = next(pending, None) if fatal is None else None
                if following is not None:
                    start(following)
                    running += 1
        finally:
            bar.close()
        if fatal is not None:
            raise fatal
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _down(self, in_a_row: int, last: TeacherUnavailable) -> TeacherUnavailable:
        return TeacherUnavailable(
            f"TeacherLLM stopped: the teacher failed {in_a_row} session{'s' * (in_a_row > 1)} in a row "
            f"(teacher_max_failures_in_a_row); last: {last}. The store {self.store_dir} keeps every answer "
            "it gave; run the same command again to resume")

    def _prediction(self, session: Session, examples: Sequence[Session], outcome: Outcome) -> BundlePrediction:
        if not isinstance(outcome, TeacherReply):
            self._failed_calls += 1
            return BundlePrediction(session.session_id, None, None, f"teacher call failed: {outcome}",
                                    {"teacher_error": type(outcome).__name__})
        self._answered += 1
        self._used.add(outcome.usage)
        prediction = parse_prediction(session, self.style.answer_prefix + outcome.text, self.style)
        if prediction.failed:
            self._unparsed += 1
        prediction.details.update(
            teacher_call=outcome.key, from_store=outcome.cached, finish_reason=outcome.finish_reason,
            prompt_tokens=outcome.usage.prompt_tokens, completion_tokens=outcome.usage.completion_tokens)
        if examples:
            prediction.details["example_sessions"] = [e.session_id for e in examples]
        return prediction

    # ------------------------------------------------------------------ what the run records

    def _teacher_info(self) -> dict[str, Any]:
        s = self.settings
        info: dict[str, Any] = {
            "model": s.model, "base_url": redact_url(s.resolved_base_url()), "temperature": s.temperature,
            "seed": s.seed, "max_tokens": s.max_tokens, "concurrency": s.concurrency,
            "sessions": self._answered + self._failed_calls, "answered": self._answered,
            "failed_calls": self._failed_calls, "unparsed_answers": self._unparsed,
            "calls": self._answered,
        }
        stats = self._client.stats if self._client is not None else None
        info.update(calls_made=stats.calls_made if stats else 0, calls_cached=stats.calls_cached if stats else 0,
                    retries=stats.retries if stats else 0, errors=dict(stats.errors) if stats else {},
                    answers_truncated=stats.answers_truncated if stats else 0,
                    usage=_usage_json(self._used), usage_made=_usage_json(stats.usage if stats else Usage()))
        if s.price_input_per_1m or s.price_output_per_1m:
            prices = (s.price_input_per_1m, s.price_output_per_1m)
            info.update(cost=self._used.cost(*prices), cost_made=stats.cost(s) if stats else 0.0)
        return info
