"""Scripted teachers: one in-process (an extractor's ``teacher`` argument), one over HTTP on
127.0.0.1 (an OpenAI-compatible endpoint for ``distill``, reached by the real client).

Both answer from the same kind of script: a list of answers used in order, or a function of the
request's messages. An answer is a string, an :class:`Answer` (a finish reason, token counts, or
an HTTP error status) or an exception instance (raised in-process; over HTTP, answered 500).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Union
from urllib.parse import urlsplit

from recbole_bundlellm.teacher.calls import ResponseSchema, TeacherReply, Usage, call_key
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
    (messages, ``max_tokens``, ``temperature``, ``schema``) asked again is answered with the first
    answer, ``cached=True``, without using the script. ``calls`` lists the requests that used it; a
    call asked with a schema has its ``response_format`` in ``extra`` (the script answers it as
    any other: it plays an endpoint that accepts structured outputs).
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
             temperature: float | None = None, schema: ResponseSchema | None = None) -> str:
        """The answer text."""
        return self.reply(messages, max_tokens=max_tokens, temperature=temperature, schema=schema).text

    def reply(self, messages: list[Message], *, max_tokens: int | None = None,
              temperature: float | None = None, schema: ResponseSchema | None = None) -> TeacherReply:
        """The answer with its finish reason and usage; errors as the real teacher raises them."""
        messages = [dict(m) for m in messages]
        params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
        extra: dict[str, Any] = {}
        if schema is not None:
            params["response_format"] = extra["response_format"] = schema.response_format()
        key = call_key(self.model, messages, params)
        if key in self._cache:
            first = self._cache[key]
            return TeacherReply(first.text, first.finish_reason, first.usage, True, first.model, key)
        self.calls.append(ScriptedCall(messages, max_tokens, temperature, extra))
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
    store holds never reaches the server; a request's ``response_format`` is in its ``extra``).

    Structured outputs: a request whose ``response_format`` type is not in ``response_formats``
    (default: all of ``json_schema``, ``json_object``, ``text``) is refused with HTTP
    ``refusal_status`` naming ``response_format``, without using the script, and listed in
    ``refused``; ``response_formats=("json_object", "text")`` with ``refusal_status=500`` plays
    llama-cpp-python's server, ``()`` an endpoint without structured outputs. Answers are the
    script's either way (the fake does not hold them to the schema).

    Batch mode: it also serves the Files API (``POST /v1/files``, ``GET /v1/files/{id}`` and
    ``/content``) and the Batches API (``POST /v1/batches``, ``GET /v1/batches`` and
    ``/v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``). A batch stays ``in_progress`` until
    it has been retrieved ``batch_polls`` times, then answers every line from the script, as
    many chat completions (a line scripted as an error answer, e.g. ``Answer.error(500)``, is a
    failed line, in the error file), and is ``completed``. ``batches`` maps id to the batch
    object and ``polls`` id to its retrievals; set ``batch_polls`` at any time.
    """

    def __init__(self, script: Script, *, model: str = "fake-teacher", default: ScriptItem | None = None,
                 delay: float = 0.0, response_formats: Sequence[str] = ("json_schema", "json_object", "text"),
                 refusal_status: int = 400, batch_polls: int = 1, api_key: str | None = None) -> None:
        self.model = model
        self.api_key = api_key  # when set, a request without "Authorization: Bearer <api_key>" gets 401
        self.delay = delay
        self.response_formats = tuple(response_formats)
        self.refusal_status = refusal_status
        self.batch_polls = batch_polls
        self.requests: list[ScriptedCall] = []
        self.refused: list[ScriptedCall] = []
        self.files: dict[str, dict[str, Any]] = {}  # id -> file object, with its bytes under "_content"
        self.batches: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.batch_requests: list[ScriptedCall] = []  # the lines of finished batches, as requests
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

    # -- the Files and Batches APIs ------------------------------------------------------------
    def upload(self, content_type: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        """``POST /files`` (multipart: ``purpose`` and ``file``)."""
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts() if message.is_multipart() else []:
            name = part.get_param("name", header="content-disposition")
            fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
        if "file" not in fields or "purpose" not in fields:
            return 400, _error_body("a file upload needs the fields 'file' and 'purpose'", "invalid_request_error")
        filename, content = fields["file"]
        with self._lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                                   "filename": filename or "upload.jsonl", "purpose": fields["purpose"][1].decode(),
                                   "status": "processed", "_content": content}
            return 200, _public(self.files[file_id])

    def _new_file(self, name: str, lines: list[dict[str, Any]]) -> str:
        content = "".join(json.dumps(line) + "\n" for line in lines).encode()
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                               "filename": name, "purpose": "batch_output", "status": "processed", "_content": content}
        return file_id

    def create_batch(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """``POST /batches``."""
        with self._lock:
            source = self.files.get(str(body.get("input_file_id")))
            if source is None:
                return 404, _error_body(f"no file {body.get('input_file_id')!r}", "invalid_request_error")
            if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
                return 400, _error_body("endpoint must be /v1/chat/completions and completion_window 24h",
                                        "invalid_request_error")
            batch_id = f"batch_{len(self.batches) + 1}"
            total = sum(1 for line in source["_content"].splitlines() if line.strip())
            self.batches[batch_id] = {
                "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                "input_file_id": source["id"], "completion_window": "24h", "status": "in_progress",
                "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
                "in_progress_at": int(time.time()), "completed_at": None, "cancelled_at": None,
                "metadata": body.get("metadata"), "request_counts": {"total": total, "completed": 0, "failed": 0}}
            self.polls[batch_id] = 0
            return 200, dict(self.batches[batch_id])

    def retrieve_batch(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        """``GET /batches/{id}``: one poll; the batch is run on its ``batch_polls``-th."""
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return 404, _error_body(f"no batch {batch_id!r}", "invalid_request_error")
            self.polls[batch_id] += 1
            due = batch["status"] == "in_progress" and self.polls[batch_id] >= self.batch_polls
        if due:
            self._run_batch(batch_id)
        with self._lock:
            return 200, dict(self.batches[batch_id])

    def _run_batch(self, batch_id: str) -> None:
        with self._lock:
            batch = self.batches[batch_id]
            raw = self.files[batch["input_file_id"]]["_content"]
        output: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for n, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            request = json.loads(line)
            code, payload = self._answer(dict(request.get("body") or {}), batch=True)
            if code == 200 and isinstance(payload, dict):
                output.append({"id": f"{batch_id}_req_{n}", "custom_id": request.get("custom_id"), "error": None,
                               "response": {"status_code": 200, "request_id": f"req_{n}", "body": payload}})
            else:
                body = payload if isinstance(payload, dict) else _error_body("the answer is not JSON", "server_error")
                errors.append({"id": f"{batch_id}_req_{n}", "custom_id": request.get("custom_id"), "error": None,
                               "response": {"status_code": code if code != 200 else 500, "request_id": f"req_{n}",
                                            "body": body}})
        with self._lock:
            if batch["status"] != "in_progress":  # cancelled meanwhile
                return
            batch.update(status="completed", completed_at=int(time.time()),
                         output_file_id=self._new_file(f"{batch_id}_output.jsonl", output) if output else None,
                         error_file_id=self._new_file(f"{batch_id}_errors.jsonl", errors) if errors else None,
                         request_counts={"total": len(output) + len(errors), "completed": len(output),
                                         "failed": len(errors)})

    def cancel_batch(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        """``POST /batches/{id}/cancel``."""
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return 404, _error_body(f"no batch {batch_id!r}", "invalid_request_error")
            if batch["status"] == "in_progress":
                batch.update(status="cancelled", cancelled_at=int(time.time()))
            return 200, dict(batch)

    def list_batches(self) -> tuple[int, dict[str, Any]]:
        """``GET /batches`` (newest first, one page)."""
        with self._lock:
            data = [dict(b) for b in reversed(list(self.batches.values()))]
        return 200, {"object": "list", "data": data, "has_more": False,
                     "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}

    def file(self, file_id: str, content: bool) -> tuple[int, dict[str, Any] | bytes]:
        """``GET /files/{id}`` or its ``/content``."""
        with self._lock:
            found = self.files.get(file_id)
            if found is None:
                return 404, _error_body(f"no file {file_id!r}", "invalid_request_error")
            return 200, found["_content"] if content else _public(found)

    def _answer(self, body: dict[str, Any], batch: bool = False) -> tuple[int, dict[str, Any] | str]:
        messages = [dict(m) for m in body.get("messages") or []]
        call = ScriptedCall(messages, body.get("max_tokens"), body.get("temperature"),
                            {k: v for k, v in body.items() if k not in ("messages", "max_tokens", "temperature")})
        response_format = body.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") not in self.response_formats:
            with self._lock:
                self.refused.append(call)
            kind = response_format.get("type")
            return self.refusal_status, _error_body(
                f"Invalid parameter: 'response_format' of type '{kind}' is not supported by this server.",
                "invalid_request_error")
        with self._lock:
            (self.batch_requests if batch else self.requests).append(call)
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


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


_FILE_RE = re.compile(r".*/files/([^/]+)(/content)?$")
_BATCH_RE = re.compile(r".*/batches/([^/]+)(/cancel)?$")


class _Handler(BaseHTTPRequestHandler):
    server_owner: FakeTeacherServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet: tests read the requests, not a log
        pass

    def _json(self, code: int, obj: Any) -> None:
        page = isinstance(obj, str)  # a scripted non-JSON body
        raw = isinstance(obj, bytes)  # a file's content
        body = obj if raw else obj.encode() if page else json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream" if raw else "text/html" if page
                         else "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        key = self.server_owner.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._json(401, _error_body("Incorrect API key provided.", "invalid_request_error"))
        return False

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if not self._authorized():
            return
        owner = self.server_owner
        path = urlsplit(self.path).path.rstrip("/")
        if path.endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": owner.model, "object": "model"}]})
        elif path.endswith("/batches"):
            self._json(*owner.list_batches())
        elif (match := _BATCH_RE.match(path)) and not match.group(2):
            self._json(*owner.retrieve_batch(match.group(1)))
        elif match := _FILE_RE.match(path):
            self._json(*owner.file(match.group(1), content=bool(match.group(2))))
        else:
            self._json(404, _error_body(f"no route {self.path}", "not_found"))

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self._authorized():
            return
        owner = self.server_owner
        path = urlsplit(self.path).path.rstrip("/")
        if path.endswith("/files"):
            self._json(*owner.upload(self.headers.get("Content-Type", ""), raw))
            return
        if (match := _BATCH_RE.match(path)) and match.group(2):
            self._json(*owner.cancel_batch(match.group(1)))
            return
        if not path.endswith(("/chat/completions", "/batches")):
            self._json(404, _error_body(f"no route {self.path}", "not_found"))
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._json(400, _error_body("the body is not JSON", "invalid_request_error"))
            return
        if path.endswith("/batches"):
            self._json(*owner.create_batch(body))
            return
        code, payload = owner._answer(body)
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
