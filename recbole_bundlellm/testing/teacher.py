"""Scripted teachers: one in-process (an extractor's ``teacher`` argument), one over HTTP on
127.0.0.1 (an OpenAI-compatible endpoint for ``distill``, reached by the real client).

Both answer from the same kind of script: a list of answers used in order, or a function of the
request's messages. An answer is a string, an :class:`Answer` (a finish reason, token counts, or
an HTTP error status) or an exception instance (raised in-process; over HTTP, answered 500).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Union

from recbole_bundlellm.teacher.calls import TeacherReply, Usage, call_key
from recbole_bundlellm.teacher.errors import TeacherRequestError, TeacherUnavailable

Message = dict[str, str]


@dataclass(frozen=True)
class Answer:
    """One scripted answer.

    ``finish_reason`` ``"length"`` is an answer cut off at ``max_tokens`` (:meth:`cut`). Token
    counts default to the words of the request's messages and of ``text``. A ``status`` other
    than 200 is an endpoint error (:meth:`error`): 400-class (but 408 and 429) rejects the request
    for good (``TeacherRequestError``: the session is stored as failed), the others are transient
    (retried over HTTP; in-process, ``TeacherUnavailable`` at once).
    """

    text: str = ""
    finish_reason: str | None = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    status: int = 200
    #: Served as is (``text/html``, HTTP 200) instead of a completion: a proxy's page, say.
    raw_body: str | None = None

    @classmethod
    def page(cls, html: str = "<html><body>Gateway login</body></html>") -> Answer:
        """HTTP 200 with a body that is not JSON (e.g. a proxy's login page)."""
        return cls(finish_reason=None, raw_body=html)

    @classmethod
    def cut(cls, text: str) -> Answer:
        """An answer cut off at ``max_tokens`` (``finish_reason="length"``)."""
        return cls(text, finish_reason="length")

    @classmethod
    def error(cls, status: int, message: str = "scripted error") -> Answer:
        """The endpoint answers HTTP ``status`` with ``message``."""
        if status == 200:
            raise ValueError("an error answer needs an HTTP status other than 200")
        return cls(message, finish_reason=None, status=status)


ScriptItem = Union[str, Answer, BaseException]
#: A list of answers (used in order) or a function ``messages -> answer``.
Script = Union[Sequence[ScriptItem], Callable[[list[Message]], ScriptItem]]


def _words(text: str) -> int:
    return len(str(text).split())


class _Script:
    """The answers of a script, thread-safe (one teacher may be called from worker threads)."""

    def __init__(self, script: Script, default: ScriptItem | None) -> None:
        self._fn = script if callable(script) else None
        self._queue = [] if callable(script) else list(script)
        self._default = default
        self._lock = threading.Lock()
        self.used = 0

    def next(self, messages: list[Message]) -> Answer | BaseException:
        with self._lock:
            self.used += 1
            if self._fn is not None:
                item = self._fn(messages)
            elif self._queue:
                item = self._queue.pop(0)
            elif self._default is not None:
                item = self._default
            else:
                item = AssertionError(f"the scripted teacher has no answer left for request #{self.used} "
                                      "(give more answers, or default=...)")
        if isinstance(item, BaseException):
            return item
        answer = item if isinstance(item, Answer) else Answer(str(item))
        prompt = answer.prompt_tokens if answer.prompt_tokens is not None else \
            sum(_words(m.get("content", "")) for m in messages)
        completion = answer.completion_tokens if answer.completion_tokens is not None else _words(answer.text)
        return Answer(answer.text, answer.finish_reason, prompt, completion, answer.status, answer.raw_body)

    @property
    def left(self) -> int | None:
        """Answers not used yet (None for a function script)."""
        return None if self._fn is not None else len(self._queue)


@dataclass
class ScriptedCall:
    """One request a scripted teacher received."""

    messages: list[Message]
    max_tokens: int | None = None
    temperature: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ScriptedTeacher:
    """An in-process teacher (the ``teacher`` an extractor's ``extract_session`` receives).

    It has the ``chat`` and ``reply`` of the real one, and its cache semantics: the same request
    (messages, ``max_tokens``, ``temperature``) asked again is answered with the first answer,
    ``cached=True``, without using the script. ``calls`` lists the requests that used it.
    """

    def __init__(self, script: Script, *, model: str = "scripted-teacher",
                 default: ScriptItem | None = None) -> None:
        self.model = model
        self.calls: list[ScriptedCall] = []
        self._script = _Script(script, default)
        self._cache: dict[str, TeacherReply] = {}

    @property
    def left(self) -> int | None:
        """Scripted answers not used yet (None for a function script)."""
        return self._script.left

    def chat(self, messages: list[Message], *, max_tokens: int | None = None,
             temperature: float | None = None) -> str:
        """The answer text."""
        return self.reply(messages, max_tokens=max_tokens, temperature=temperature).text

    def reply(self, messages: list[Message], *, max_tokens: int | None = None,
              temperature: float | None = None) -> TeacherReply:
        """The answer with its finish reason and usage; errors as the real teacher raises them."""
        messages = [dict(m) for m in messages]
        key = call_key(self.model, messages, {"max_tokens": max_tokens, "temperature": temperature})
        if key in self._cache:
            first = self._cache[key]
            return TeacherReply(first.text, first.finish_reason, first.usage, True, first.model, key)
        self.calls.append(ScriptedCall(messages, max_tokens, temperature))
        answer = self._script.next(messages)
        if isinstance(answer, BaseException):
            raise answer
        if answer.status != 200:
            if _is_transient(answer.status):
                raise TeacherUnavailable(f"scripted teacher (model {self.model}) failed: HTTP {answer.status}: "
                                         f"{answer.text}")
            raise TeacherRequestError(f"scripted teacher (model {self.model}) rejected the request "
                                      f"(HTTP {answer.status}): {answer.text}")
        if answer.raw_body is not None:
            raise TeacherRequestError(f"scripted teacher (model {self.model}) sent an unusable answer (not JSON)")
        reply = TeacherReply(answer.text, answer.finish_reason,
                             Usage(answer.prompt_tokens or 0, answer.completion_tokens or 0), False, self.model, key)
        self._cache[key] = reply
        return reply


def _is_transient(status: int) -> bool:
    return status >= 500 or status in (408, 429)


class FakeTeacherServer:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 that answers from a script.

    ``GET /v1/models`` lists ``model``; ``POST /v1/chat/completions`` takes the next answer. Use
    it as a context manager (or :meth:`start` / :meth:`stop`) and point the teacher at it with
    :meth:`config` (the ``teacher:`` block). ``requests`` lists the completions asked for (as
    :class:`ScriptedCall`; the client caches answers in the knowledge store, so a request the
    store holds never reaches the server).
    """

    def __init__(self, script: Script, *, model: str = "fake-teacher", default: ScriptItem | None = None,
                 delay: float = 0.0) -> None:
        self.model = model
        self.delay = delay
        self.requests: list[ScriptedCall] = []
        self._script = _Script(script, default)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def left(self) -> int | None:
        """Scripted answers not used yet (None for a function script)."""
        return self._script.left

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake teacher server is not started (use it in a `with` block)")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def config(self, **overrides: Any) -> dict[str, Any]:
        """The ``teacher:`` settings block for this server: its URL and model, one retry with a
        tiny backoff, a short timeout; ``overrides`` win (any ``TeacherSettings`` field)."""
        return {"base_url": self.base_url, "model": self.model, "max_retries": 1, "backoff_base": 0.01,
                "backoff_max": 0.05, "timeout": 30.0, "concurrency": 1, **overrides}

    def start(self) -> FakeTeacherServer:
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-teacher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeTeacherServer:  # noqa: PYI034 - Self needs Python 3.11
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any] | str]:
        messages = [dict(m) for m in body.get("messages") or []]
        with self._lock:
            self.requests.append(ScriptedCall(messages, body.get("max_tokens"), body.get("temperature"),
                                              {k: v for k, v in body.items()
                                               if k not in ("messages", "max_tokens", "temperature")}))
        answer = self._script.next(messages)
        if self.delay:
            time.sleep(self.delay)
        if isinstance(answer, BaseException):
            return 500, _error_body(f"{type(answer).__name__}: {answer}", "server_error")
        if answer.status != 200:
            return answer.status, _error_body(answer.text, "invalid_request_error")
        if answer.raw_body is not None:
            return 200, answer.raw_body
        usage = {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                 "total_tokens": (answer.prompt_tokens or 0) + (answer.completion_tokens or 0)}
        return 200, {"id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
                     "model": self.model,
                     "choices": [{"index": 0, "finish_reason": answer.finish_reason,
                                  "message": {"role": "assistant", "content": answer.text}}],
                     "usage": usage}


def _error_body(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


class _Handler(BaseHTTPRequestHandler):
    server_owner: FakeTeacherServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet: tests read the requests, not a log
        pass

    def _json(self, code: int, obj: Any) -> None:
        page = isinstance(obj, str)  # a scripted non-JSON body
        body = obj.encode() if page else json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/html" if page else "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": self.server_owner.model, "object": "model"}]})
        else:
            self._json(404, _error_body(f"no route {self.path}", "not_found"))

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, _error_body(f"no route {self.path}", "not_found"))
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._json(400, _error_body("the body is not JSON", "invalid_request_error"))
            return
        code, payload = self.server_owner._answer(body)
        self._json(code, payload)


__all__ = ["Answer", "FakeTeacherServer", "Script", "ScriptedCall", "ScriptedTeacher"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m recbole_bundlellm.testing.teacher --answer TEXT``: a fake teacher answering
    TEXT to every request on 127.0.0.1, for a real ``bundlellm distill`` by hand; prints the
    ``teacher:`` block to put in the YAML, serves until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m recbole_bundlellm.testing.teacher", description=main.__doc__)
    parser.add_argument("--answer", required=True, help="the text answered to every request")
    parser.add_argument("--model", default="fake-teacher")
    args = parser.parse_args(argv)
    with FakeTeacherServer([], default=args.answer, model=args.model) as server:
        block = server.config()
        print("teacher:", *(f"  {key}: {json.dumps(value)}" for key, value in block.items()), "", sep="\n", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
