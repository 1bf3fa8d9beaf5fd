"""The teacher client: OpenAI-compatible chat calls, answered from a call cache when possible.

Every request is keyed by :func:`~recbole_bundlellm.teacher.calls.call_key` of (model, messages,
sampling parameters). A key found in the :class:`~recbole_bundlellm.teacher.calls.CallCache` (in
practice the knowledge store) is answered without any HTTP; a new one is sent (at most
``concurrency`` at once), retried with exponential backoff on transient failures, and stored before
its answer is returned, so a killed run never pays for a finished call twice.

The API key is read from the environment variable named by ``teacher.api_key_env`` and handed to
the ``openai`` client only: it is never part of a stored request, a log line or an error message.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import openai

from recbole_bundlellm.teacher.calls import CallCache, CallRecord, TeacherReply, Usage, call_key, now_iso
from recbole_bundlellm.teacher.errors import (TeacherCredentialsRefused, TeacherError, TeacherRequestError,
                                               TeacherUnavailable)
from recbole_bundlellm.teacher.settings import TeacherSettings, redact_url

log = logging.getLogger(__name__)

Message = dict[str, str]
# Sent when the key variable is unset: local servers ignore the key, but the SDK insists on one.
NO_KEY = "sk-no-key"


@dataclass
class TeacherStats:
    """What this process's teacher client did (cached calls cost nothing and are not in ``usage``)."""

    calls_made: int = 0  # answers fetched over HTTP (and stored)
    calls_cached: int = 0  # answers served from the store (or from a concurrent identical call)
    retries: int = 0  # attempts repeated after a transient failure
    errors: dict[str, int] = field(default_factory=dict)  # failure reason ("timeout", "http_429", ...) -> count
    usage: Usage = field(default_factory=Usage)  # tokens of the calls made
    call_seconds: float = 0.0  # summed latency of the calls made (successful attempts)
    answers_truncated: int = 0  # answers longer than max_answer_chars, cut to it when stored

    def cost(self, settings: TeacherSettings) -> float:
        """Estimated cost of the calls made, at the settings' per-million-token prices."""
        return self.usage.cost(settings.price_input_per_1m, settings.price_output_per_1m)

    def to_json(self, settings: TeacherSettings | None = None) -> dict[str, Any]:
        """A JSON-friendly summary; with ``settings``, the estimated cost too."""
        out: dict[str, Any] = {
            "calls_made": self.calls_made,
            "calls_cached": self.calls_cached,
            "retries": self.retries,
            "errors": dict(self.errors),
            "usage": {"prompt_tokens": self.usage.prompt_tokens,
                      "completion_tokens": self.usage.completion_tokens,
                      "total_tokens": self.usage.total_tokens},
            "call_seconds": round(self.call_seconds, 3),
            "answers_truncated": self.answers_truncated,
        }
        if settings is not None:
            out["cost"] = self.cost(settings)
        return out


def _status_reason(exc: openai.APIStatusError) -> str:
    return f"http_{exc.status_code}"


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (``Retry-After`` or ``retry-after-ms``), if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:  # an HTTP date: rare for APIs; fall back to our own backoff
            continue
        if seconds >= 0:
            return seconds
    return None


class TeacherClient:
    """Calls the teacher through a call cache; thread-safe, one per distillation.

    ``store`` is any :class:`~recbole_bundlellm.teacher.calls.CallCache`; a knowledge store must be
    open for writing (``with store.writer():``) when a new call is made.
    ``client`` replaces the ``openai.OpenAI`` client built from the settings (its own retries
    should be off: this class retries).
    """

    def __init__(self, settings: TeacherSettings, store: CallCache, *,
                 client: openai.OpenAI | None = None) -> None:
        settings.validate()
        self.settings = settings
        self.store = store
        self.model: str = settings.model
        self.stats = TeacherStats()
        if client is None:
            self.base_url = settings.resolved_base_url()
            api_key = os.environ.get(settings.api_key_env) or NO_KEY
            client = openai.OpenAI(base_url=self.base_url, api_key=api_key, timeout=settings.timeout,
                                   max_retries=0)
        else:
            self.base_url = str(client.base_url).rstrip("/")
        self._client = client
        # Kept only to scrub it from error texts a server might echo back; never written anywhere.
        self._secret = client.api_key if client.api_key and client.api_key != NO_KEY else None
        self._slots = threading.BoundedSemaphore(settings.concurrency)
        self._stats_lock = threading.Lock()
        self._inflight: dict[str, Future[CallRecord]] = {}
        self._inflight_lock = threading.Lock()
        self._rng = random.Random()
        self._model_checked = False
        self._model_lock = threading.Lock()

    # -- requests -------------------------------------------------------------------------------
    def request_params(self, *, max_tokens: int | None = None, temperature: float | None = None) -> dict[str, Any]:
        """The sampling parameters hashed with model and messages (normalized: 0 and 0.0 are one key)."""
        return {
            "temperature": float(self.settings.temperature if temperature is None else temperature),
            "seed": self.settings.seed,
            "max_tokens": int(self.settings.max_tokens if max_tokens is None else max_tokens),
        }

    def complete(self, messages: list[Message], *, max_tokens: int | None = None,
                 temperature: float | None = None) -> tuple[CallRecord, bool]:
        """The call record answering ``messages`` and whether it came from the store.

        Raises :class:`TeacherRequestError` when the endpoint rejects this request for good and
        :class:`TeacherUnavailable` when it keeps failing after every retry.
        """
        messages = [dict(m) for m in messages]
        params = self.request_params(max_tokens=max_tokens, temperature=temperature)
        key = call_key(self.model, messages, params)
        stored = self.store.get_call(key)
        if stored is not None:
            self._count(cached=True)
            return stored, True
        # Per-key dedupe: the first thread asking a key makes the call, the others wait for it.
        with self._inflight_lock:
            future = self._inflight.get(key)
            owner = future is None
            if owner:
                future = Future()
                self._inflight[key] = future
        assert future is not None
        if not owner:
            record = future.result()  # raises the owner's error, if it failed
            self._count(cached=True)
            return record, True
        try:
            stored = self.store.get_call(key)  # finished by another thread since the first look
            if stored is not None:
                future.set_result(stored)
                self._count(cached=True)
                return stored, True
            record = self._request(key, messages, params)
            self.store.put_call(record)
            future.set_result(record)
            return record, False
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            with self._inflight_lock:
                self._inflight.pop(key, None)

    def chat(self, messages: list[Message], *, max_tokens: int | None = None,
             temperature: float | None = None) -> str:
        """The answer text (the :class:`~recbole_bundlellm.knowledge.extractor.Teacher` protocol)."""
        record, _ = self.complete(messages, max_tokens=max_tokens, temperature=temperature)
        return record.text

    def reply(self, messages: list[Message], *, max_tokens: int | None = None,
              temperature: float | None = None) -> TeacherReply:
        """The answer with its finish reason and usage; the same cache and errors as :meth:`chat`."""
        record, cached = self.complete(messages, max_tokens=max_tokens, temperature=temperature)
        return TeacherReply.of_call(record, cached)

    def for_unit(self) -> UnitTeacher:
        """A teacher view that records the calls of one extraction unit (one session)."""
        return UnitTeacher(self)

    # -- internals ------------------------------------------------------------------------------
    def _count(self, *, cached: bool = False, error: str | None = None, retry: bool = False,
               made: CallRecord | None = None) -> None:
        with self._stats_lock:
            if cached:
                self.stats.calls_cached += 1
            if error is not None:
                self.stats.errors[error] = self.stats.errors.get(error, 0) + 1
            if retry:
                self.stats.retries += 1
            if made is not None:
                self.stats.calls_made += 1
                self.stats.usage.add(made.usage)
                self.stats.call_seconds += made.latency_s

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _where(self) -> str:
        return f"teacher {redact_url(self.base_url)} (model {self.model})"

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = self.settings.backoff_max
        if retry_after is not None:
            return min(cap, retry_after)
        # Full jitter: concurrent callers that failed together do not retry together.
        return self._rng.uniform(0.0, min(cap, self.settings.backoff_base * 2 ** attempt))

    def check_model(self) -> None:
        """Check once that the endpoint serves :attr:`model`, when it lists its models.

        Raises :class:`TeacherError` naming the models it serves. Why: llama.cpp's server answers
        any model name with its only model, so a typo would label every record with a model that
        never answered. An endpoint that lists no models (or fails to) is taken at its word.
        """
        if self._model_checked:
            return
        with self._model_lock:
            if self._model_checked:
                return
            served = self._served_models()
            if served and self.model not in served:
                raise TeacherError(f"{self._where()}: the endpoint does not serve model '{self.model}'; it serves: "
                                   f"{', '.join(served)} (set teacher.model to one of them)")
            # Checked once, whatever the answer: an unreachable endpoint is reported by the call
            # that follows (with its retries), not by a GET /models before every call.
            self._model_checked = True

    def _served_models(self) -> list[str] | None:
        """The ids of ``GET /models``; [] when the endpoint does not list them, None when it cannot
        be reached (the call that follows reports that, with its retries)."""
        try:
            page = self._client.models.list()
        except openai.APIConnectionError as exc:  # a timeout too
            log.debug("%s: GET /models: %s", self._where(), exc)
            return None
        except openai.APIError as exc:  # e.g. 404: an endpoint without a model list
            log.debug("%s: no model list (%s)", self._where(), self._scrub(str(exc)))
            return []
        return [str(m.id) for m in (getattr(page, "data", None) or []) if getattr(m, "id", None)]

    def _request(self, key: str, messages: list[Message], params: dict[str, Any]) -> CallRecord:
        self.check_model()  # before the first call over HTTP; calls served from the store need none
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages,
                                  "temperature": params["temperature"], "max_tokens": params["max_tokens"]}
        if params["seed"] is not None:
            kwargs["seed"] = params["seed"]
        max_attempts = self.settings.max_retries + 1
        for attempt in range(max_attempts):
            retry_after: float | None = None
            try:
                with self._slots:
                    started = time.monotonic()
                    response = self._client.chat.completions.create(**kwargs)
                    latency = time.monotonic() - started
                return self._record(key, messages, params, response, latency, attempt + 1)
            except openai.APITimeoutError as exc:  # before APIConnectionError: it is a subclass
                reason, error = "timeout", exc
            except openai.APIConnectionError as exc:
                reason, error = "connection", exc
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                # A configuration problem: retrying cannot help, and every later call would fail too.
                # The body is left out on purpose: some servers echo (part of) the key.
                self._count(error=_status_reason(exc))
                raise TeacherCredentialsRefused(
                    f"{self._where()} refused the credentials (HTTP {exc.status_code}); check the "
                    f"{self.settings.api_key_env} environment variable") from None
            except openai.RateLimitError as exc:
                reason, error, retry_after = _status_reason(exc), exc, _retry_after(exc)
            except openai.APIStatusError as exc:
                # 408 (the server's own request timeout) is as transient as a client-side timeout.
                if exc.status_code < 500 and exc.status_code != 408:
                    self._count(error=_status_reason(exc))
                    raise TeacherRequestError(
                        f"{self._where()} rejected the request (HTTP {exc.status_code}): "
                        f"{self._scrub(str(exc.message))}") from None
                reason, error, retry_after = _status_reason(exc), exc, _retry_after(exc)
            except openai.APIError as exc:  # e.g. a 200 whose body is not a completion
                self._count(error="bad_response")
                raise TeacherRequestError(f"{self._where()} sent an unusable answer: "
                                          f"{self._scrub(str(exc))}") from None
            self._count(error=reason)
            if attempt + 1 >= max_attempts:
                raise TeacherUnavailable(
                    f"{self._where()} failed {max_attempts} attempts (max_retries="
                    f"{self.settings.max_retries}); last error: {reason}: {self._scrub(str(error))}") from None
            sleep = self._backoff(attempt, retry_after)
            self._count(retry=True)
            log.warning("%s: %s (%s); retry %d of %d in %.2f s", self._where(), reason,
                        self._scrub(str(error)), attempt + 1, self.settings.max_retries, sleep)
            time.sleep(sleep)
        raise AssertionError("unreachable")  # pragma: no cover

    def _record(self, key: str, messages: list[Message], params: dict[str, Any], response: Any,
                latency: float, attempts: int) -> CallRecord:
        if isinstance(response, (str, bytes)):  # the client hands back a body it cannot read as JSON
            self._count(error="bad_response")
            text = response.decode(errors="replace") if isinstance(response, bytes) else response
            raise TeacherRequestError(f"{self._where()} answered HTTP 200 with a body that is not JSON (a proxy's "
                                      f"page?): {self._scrub(' '.join(text.split())[:80])!r}")
        choices = getattr(response, "choices", None) or []
        if not choices:
            self._count(error="bad_response")
            raise TeacherRequestError(f"{self._where()} answered without any choice")
        choice = choices[0]
        usage = getattr(response, "usage", None)
        text = (choice.message.content if choice.message is not None else None) or ""
        if len(text) > self.settings.max_answer_chars:
            log.warning("%s: an answer of %d characters was cut to max_answer_chars=%d", self._where(), len(text),
                        self.settings.max_answer_chars)
            text = text[:self.settings.max_answer_chars]
            with self._stats_lock:
                self.stats.answers_truncated += 1
        record = CallRecord(
            key=key,
            model=self.model,
            request={"model": self.model, "messages": messages, "params": params},
            text=text,
            finish_reason=choice.finish_reason,
            usage=Usage(prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0)),
            created_at=now_iso(),
            latency_s=round(latency, 4),
            attempts=attempts,
            response_model=str(getattr(response, "model", None) or "") or None,
        )
        self._count(made=record)
        log.debug("%s: call %s in %.2f s (%d+%d tokens, %d attempt(s))", self._where(), key, latency,
                  record.usage.prompt_tokens, record.usage.completion_tokens, attempts)
        return record


class UnitTeacher:
    """The :class:`~recbole_bundlellm.knowledge.extractor.Teacher` of one extraction unit.

    Records which calls the unit used and their tokens (cached or not), for the record's
    provenance. Use it from one thread (one unit is extracted by one worker).
    """

    def __init__(self, client: TeacherClient) -> None:
        self._client = client
        self.model: str = client.model
        self.call_keys: list[str] = []
        self.usage = Usage()
        self.calls_made = 0
        self.calls_cached = 0
        self.response_models: list[str] = []  # the models that answered its calls, as the endpoint said

    def chat(self, messages: list[Message], *, max_tokens: int | None = None,
             temperature: float | None = None) -> str:
        """The answer text; errors as :meth:`TeacherClient.complete`."""
        return self.reply(messages, max_tokens=max_tokens, temperature=temperature).text

    def reply(self, messages: list[Message], *, max_tokens: int | None = None,
              temperature: float | None = None) -> TeacherReply:
        """The answer with its finish reason and usage (a cached reply keeps the original call's);
        errors as :meth:`TeacherClient.complete`."""
        record, cached = self._client.complete(messages, max_tokens=max_tokens, temperature=temperature)
        self.call_keys.append(record.key)
        self.usage.add(record.usage)
        if record.response_model and record.response_model not in self.response_models:
            self.response_models.append(record.response_model)
        if cached:
            self.calls_cached += 1
        else:
            self.calls_made += 1
        return TeacherReply.of_call(record, cached)
