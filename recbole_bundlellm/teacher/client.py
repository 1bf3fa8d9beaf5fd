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

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai

from recbole_bundlellm.teacher.calls import (CallCache, CallRecord, ResponseSchema, TeacherReply, Usage, call_key,
                                             canonical_json, now_iso)
from recbole_bundlellm.teacher.errors import (TeacherCredentialsRefused, TeacherError, TeacherRequestError,
                                               TeacherStructuredOutputsRefused, TeacherUnavailable)
from recbole_bundlellm.teacher.settings import TeacherSettings, redact_url

log = logging.getLogger(__name__)

Message = dict[str, str]
_T = TypeVar("_T")
# Sent when the key variable is unset: local servers ignore the key, but the SDK insists on one.
NO_KEY = "sk-no-key"
#: The forms of ``response_format`` tried, in order, before free text: OpenAI's ``json_schema``
#: (also llama.cpp's llama-server, vLLM, Ollama), then ``json_object`` with a ``schema`` (what
#: llama-cpp-python's server, the embedded teacher, honours: it answers the first with HTTP 500).
DIALECTS = ("json_schema", "json_object")


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
    structured_calls: int = 0  # calls made (or batched) with a response_format (an extractor's schema)
    structured_refusals: int = 0  # response_format forms the endpoint refused (each remembered, then not sent)
    structured_format: str | None = None  # the form asked last: json_schema, json_object, text (refused), off
    batch_calls: int = 0  # answers fetched from finished batches (and stored); not in calls_made
    batch_usage: Usage = field(default_factory=Usage)  # their tokens (priced at the batch prices)
    batches_created: int = 0  # batches this process created
    batches_resumed: int = 0  # batches found in the store (a killed run's) and polled again, not paid twice
    batch_line_errors: int = 0  # batched requests that failed (asked again synchronously)
    batch_seconds: float = 0.0  # wall time spent uploading, polling and downloading batches

    def cost(self, settings: TeacherSettings) -> float:
        """Estimated cost of the calls made (at the settings' per-million-token prices) and
        batched (at the batch prices, :meth:`TeacherSettings.batch_prices`)."""
        return (self.usage.cost(settings.price_input_per_1m, settings.price_output_per_1m)
                + self.batch_usage.cost(*settings.batch_prices()))

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
            "structured_calls": self.structured_calls,
            "structured_refusals": self.structured_refusals,
            "structured_format": self.structured_format,
        }
        if self.batch_calls or self.batches_created or self.batches_resumed or self.batch_line_errors:
            out["batch"] = {"calls": self.batch_calls, "batches_created": self.batches_created,
                            "batches_resumed": self.batches_resumed, "line_errors": self.batch_line_errors,
                            "usage": {"prompt_tokens": self.batch_usage.prompt_tokens,
                                      "completion_tokens": self.batch_usage.completion_tokens,
                                      "total_tokens": self.batch_usage.total_tokens},
                            "seconds": round(self.batch_seconds, 3)}
        if settings is not None:
            out["cost"] = self.cost(settings)
            if "batch" in out:
                out["batch"]["cost"] = self.batch_usage.cost(*settings.batch_prices())
        return out


@dataclass(frozen=True)
class PreparedCall:
    """One request as the client will send it: its key, messages, the hashed parameters and the
    ``response_format`` form (None: free text)."""

    key: str
    messages: list[Message]
    params: dict[str, Any]
    schema: ResponseSchema | None = None
    dialect: str | None = None


class _FormatRefused(Exception):
    """Internal: the endpoint refused this ``response_format`` form; ask again in the next one."""


_FORMAT_WORDS = ("response_format", "json_schema", "structured output")
_UNSUPPORTED_WORDS = ("unsupported", "not supported", "not implemented")


def refuses_response_format(exc: openai.APIStatusError) -> bool:
    """Whether an error answer to a request with ``response_format`` refuses that parameter.

    400 / 422 naming it (or "unsupported ... format"); 500 naming it: llama-cpp-python's server
    reports a request it cannot validate as HTTP 500, which is no transient failure.
    """
    text = f"{exc.message} {exc.body}".lower()
    names_it = any(word in text for word in _FORMAT_WORDS)
    if exc.status_code in (400, 422):
        return names_it or ("format" in text and any(word in text for word in _UNSUPPORTED_WORDS))
    return exc.status_code == 500 and names_it


def sent_response_format(schema: ResponseSchema, dialect: str) -> dict[str, Any]:
    """The ``response_format`` sent for ``schema`` in the form ``dialect`` (one of :data:`DIALECTS`)."""
    if dialect == "json_schema":
        return schema.response_format()
    return {"type": "json_object", "schema": json.loads(canonical_json(schema.schema))}


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
        # The response_format form asked next (an index into DIALECTS; len(DIALECTS): free text,
        # every form refused). Remembered for the client's life: one refusal per form, not per call.
        self._dialect = 0
        self.stats.structured_format = "off" if settings.structured_outputs == "off" else DIALECTS[0]

    # -- requests -------------------------------------------------------------------------------
    def request_params(self, *, max_tokens: int | None = None, temperature: float | None = None) -> dict[str, Any]:
        """The sampling parameters hashed with model and messages (normalized: 0 and 0.0 are one key)."""
        return {
            "temperature": float(self.settings.temperature if temperature is None else temperature),
            "seed": self.settings.seed,
            "max_tokens": int(self.settings.max_tokens if max_tokens is None else max_tokens),
        }

    def prepare(self, messages: list[Message], *, max_tokens: int | None = None, temperature: float | None = None,
                schema: ResponseSchema | None = None) -> PreparedCall:
        """The request for ``messages`` as it would be sent now: key, parameters, ``response_format``.

        With a ``schema`` (and ``structured_outputs`` not ``off``, and not refused by this
        endpoint), ``params["response_format"]`` holds its OpenAI form, so a structured answer
        and a free-text one never share a key; without, the key is what it always was.
        """
        messages = [dict(m) for m in messages]
        params = self.request_params(max_tokens=max_tokens, temperature=temperature)
        dialect = self._dialect_for(schema)
        if dialect is not None:
            assert schema is not None
            params["response_format"] = schema.response_format()
        return PreparedCall(call_key(self.model, messages, params), messages, params, schema, dialect)

    def _dialect_for(self, schema: ResponseSchema | None) -> str | None:
        if schema is None or self.settings.structured_outputs == "off":
            return None
        with self._stats_lock:
            index = self._dialect
        return DIALECTS[index] if index < len(DIALECTS) else None

    def lookup(self, call: PreparedCall) -> CallRecord | None:
        """The stored answer to ``call``, or None (no HTTP)."""
        return self.store.get_call(call.key)

    def complete(self, messages: list[Message], *, max_tokens: int | None = None,
                 temperature: float | None = None, schema: ResponseSchema | None = None) -> tuple[CallRecord, bool]:
        """The call record answering ``messages`` and whether it came from the store.

        ``schema``: ask for an answer following it (see :meth:`prepare`); an endpoint that
        refuses ``response_format`` is asked again in the next form, then (``structured_outputs:
        auto``) in free text, and that is remembered for the client's life.

        Raises :class:`TeacherRequestError` when the endpoint rejects this request for good and
        :class:`TeacherUnavailable` when it keeps failing after every retry.
        """
        while True:
            call = self.prepare(messages, max_tokens=max_tokens, temperature=temperature, schema=schema)
            try:
                return self._complete_prepared(call)
            except _FormatRefused:
                continue  # the form moved on (or to free text, a new key): ask again

    def _complete_prepared(self, call: PreparedCall) -> tuple[CallRecord, bool]:
        """:meth:`complete` of a prepared call (raises ``_FormatRefused`` when its form is refused)."""
        key = call.key
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
            record = self._request(call)
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
             temperature: float | None = None, schema: ResponseSchema | None = None) -> str:
        """The answer text (the :class:`~recbole_bundlellm.knowledge.extractor.Teacher` protocol)."""
        record, _ = self.complete(messages, max_tokens=max_tokens, temperature=temperature, schema=schema)
        return record.text

    def reply(self, messages: list[Message], *, max_tokens: int | None = None,
              temperature: float | None = None, schema: ResponseSchema | None = None) -> TeacherReply:
        """The answer with its finish reason and usage; the same cache and errors as :meth:`chat`."""
        record, cached = self.complete(messages, max_tokens=max_tokens, temperature=temperature, schema=schema)
        return TeacherReply.of_call(record, cached)

    def for_unit(self) -> UnitTeacher:
        """A teacher view that records the calls of one extraction unit (one session)."""
        return UnitTeacher(self)

    # -- batch mode (teacher/batch.py) ------------------------------------------------------------
    @property
    def api(self) -> openai.OpenAI:
        """The ``openai`` client (its own retries off: :meth:`with_retries` retries)."""
        return self._client

    @property
    def stats_lock(self) -> threading.Lock:
        """Held while :attr:`stats` is changed (worker threads share it)."""
        return self._stats_lock

    def where(self) -> str:
        """``teacher <url> (model <name>)`` for messages (the URL without credentials)."""
        return self._where()

    def batch_record(self, call: PreparedCall, body: dict[str, Any], batch_id: str) -> CallRecord:
        """The call record of a batch result line's completion ``body`` (counted as a batched
        call); :class:`TeacherRequestError` when it holds no usable completion."""
        from openai.types.chat import ChatCompletion

        # Built as the SDK builds a synchronous answer (leniently): the same record either way.
        response: Any = ChatCompletion.construct(**body)
        try:
            if not isinstance(response.choices, list):
                raise TypeError("choices is not a list")
            record = self._record(call, response, 0.0, 1, batch_id=batch_id)
        except (AttributeError, TypeError) as exc:
            self._count(error="bad_response")
            raise TeacherRequestError(f"{self._where()}: batch {batch_id} answered {call.key} with a body that is "
                                      f"not a chat completion ({exc})") from None
        with self._stats_lock:
            self.stats.batch_calls += 1
            self.stats.batch_usage.add(record.usage)
            if call.dialect is not None:
                self.stats.structured_calls += 1
        return record

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
                if "response_format" in made.request.get("params", {}):
                    self.stats.structured_calls += 1

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

    def request_body(self, call: PreparedCall) -> dict[str, Any]:
        """The JSON body of ``POST /chat/completions`` for ``call`` (also a batch line's ``body``)."""
        params = call.params
        body: dict[str, Any] = {"model": self.model, "messages": call.messages,
                                "temperature": params["temperature"], "max_tokens": params["max_tokens"]}
        if params["seed"] is not None:
            body["seed"] = params["seed"]
        if call.dialect is not None and call.schema is not None:
            body["response_format"] = sent_response_format(call.schema, call.dialect)
        return body

    def _request(self, call: PreparedCall) -> CallRecord:
        self.check_model()  # before the first call over HTTP; calls served from the store need none
        kwargs = self.request_body(call)

        def create() -> tuple[Any, float]:
            with self._slots:
                started = time.monotonic()
                response = self._client.chat.completions.create(**kwargs)
                return response, time.monotonic() - started

        (response, latency), attempts = self.with_retries(create, "the request", call=call)
        return self._record(call, response, latency, attempts)

    def with_retries(self, fn: Callable[[], _T], what: str, *, call: PreparedCall | None = None,
                     rejected: type[TeacherError] = TeacherRequestError) -> tuple[_T, int]:
        """``fn()`` (one API request) with this client's retries: its result and the attempts made.

        Timeouts, dropped connections, 408, 429 and 5xx are retried with backoff; 401/403 raise
        :class:`TeacherCredentialsRefused` at once; another 400-class answer raises ``rejected``
        (``what`` names the request in its message); with a ``call`` whose ``response_format`` the
        endpoint refuses, the refusal is remembered and ``_FormatRefused`` raised.
        """
        max_attempts = self.settings.max_retries + 1
        for attempt in range(max_attempts):
            retry_after: float | None = None
            try:
                return fn(), attempt + 1
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
                if call is not None and call.dialect is not None and refuses_response_format(exc):
                    self._format_refused(call, exc)  # raises
                # 408 (the server's own request timeout) is as transient as a client-side timeout.
                if exc.status_code < 500 and exc.status_code != 408:
                    self._count(error=_status_reason(exc))
                    raise rejected(
                        f"{self._where()} rejected {what} (HTTP {exc.status_code}): "
                        f"{self._scrub(str(exc.message))}") from None
                reason, error, retry_after = _status_reason(exc), exc, _retry_after(exc)
            except openai.APIError as exc:  # e.g. a 200 whose body is not a completion
                self._count(error="bad_response")
                raise rejected(f"{self._where()} sent an unusable answer: "
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

    def _format_refused(self, call: PreparedCall, exc: openai.APIStatusError) -> None:
        """Remember that the endpoint refuses ``call``'s form; raise ``_FormatRefused`` (ask again in
        the next form or in free text), or, with ``structured_outputs: on`` and no form left,
        :class:`TeacherStructuredOutputsRefused`."""
        why = f"HTTP {exc.status_code}: {self._scrub(' '.join(str(exc.message).split())[:200])}"
        with self._stats_lock:
            index = DIALECTS.index(call.dialect) if call.dialect in DIALECTS else len(DIALECTS)
            if self._dialect == index:  # the first thread refused in this form moves on; the others follow
                self._dialect = index + 1
                self.stats.structured_refusals += 1  # not in errors: the call goes on, in another form
                following = DIALECTS[self._dialect] if self._dialect < len(DIALECTS) else "text"
                self.stats.structured_format = following
                log.warning("%s refused response_format %r (%s); asking %s from now on", self._where(),
                            call.dialect, why, f"with response_format {following!r}" if following != "text"
                            else "in free text")
            exhausted = self._dialect >= len(DIALECTS)
        if exhausted and self.settings.structured_outputs == "on":
            raise TeacherStructuredOutputsRefused(
                f"{self._where()} refuses structured outputs (response_format; {why}); set "
                "teacher.structured_outputs: auto to ask such an endpoint in free text, or off") from None
        raise _FormatRefused()

    def _record(self, call: PreparedCall, response: Any, latency: float, attempts: int,
                batch_id: str | None = None) -> CallRecord:
        """The call record of a response (a chat completion, of a synchronous call or a batch line)."""
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
        request: dict[str, Any] = {"model": self.model, "messages": call.messages, "params": call.params}
        if call.dialect is not None and call.dialect != DIALECTS[0] and call.schema is not None:
            # Not part of the key (the schema is): which form this endpoint was asked in.
            request["response_format_sent"] = sent_response_format(call.schema, call.dialect)
        if batch_id is not None:
            request["batch_id"] = batch_id
        record = CallRecord(
            key=call.key,
            model=self.model,
            request=request,
            text=text,
            finish_reason=choice.finish_reason,
            usage=Usage(prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0)),
            created_at=now_iso(),
            latency_s=round(latency, 4),
            attempts=attempts,
            response_model=str(getattr(response, "model", None) or "") or None,
        )
        if batch_id is None:
            self._count(made=record)
        log.debug("%s: call %s in %.2f s (%d+%d tokens, %d attempt(s))", self._where(), call.key, latency,
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
        self.calls_batched = 0  # answers fetched by a batch of this run (batch mode), not in calls_cached
        self.calls_structured = 0  # answers asked with a response_format
        self.response_models: list[str] = []  # the models that answered its calls, as the endpoint said

    def chat(self, messages: list[Message], *, max_tokens: int | None = None,
             temperature: float | None = None, schema: ResponseSchema | None = None) -> str:
        """The answer text; errors as :meth:`TeacherClient.complete`."""
        return self.reply(messages, max_tokens=max_tokens, temperature=temperature, schema=schema).text

    def reply(self, messages: list[Message], *, max_tokens: int | None = None,
              temperature: float | None = None, schema: ResponseSchema | None = None) -> TeacherReply:
        """The answer with its finish reason and usage (a cached reply keeps the original call's);
        errors as :meth:`TeacherClient.complete`."""
        record, cached = self._client.complete(messages, max_tokens=max_tokens, temperature=temperature,
                                               schema=schema)
        return self.used(record, cached)

    def used(self, record: CallRecord, cached: bool, *, batched: bool = False) -> TeacherReply:
        """Count ``record`` as one answer this unit used (``batched``: fetched by a batch of this run)."""
        self.call_keys.append(record.key)
        self.usage.add(record.usage)
        if record.response_model and record.response_model not in self.response_models:
            self.response_models.append(record.response_model)
        if "response_format" in record.request.get("params", {}):
            self.calls_structured += 1
        if batched:
            self.calls_batched += 1
        elif cached:
            self.calls_cached += 1
        else:
            self.calls_made += 1
        return TeacherReply.of_call(record, cached)
