"""Fixtures for the teacher: a real OpenAI-compatible server on the embedded GGUF, a fault proxy,
and a stand-in server process for the ways a server dies.

``teacher_server`` is started once per test session (about 2 s). Without ``llama_cpp.server``
the tests that need it are skipped, unless ``BUNDLELLM_REQUIRE_TEACHER=1`` (CI sets it), which
makes a missing server a failure. ``fake_teacher`` needs nothing but Python.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_proxy import FaultProxy


def make_teacher_settings(base_url: str, **overrides: Any):
    """``TeacherSettings`` pointed at ``base_url`` with test-sized answers and backoff.

    Small ``max_tokens`` keeps each real call well under a second; tiny backoff keeps retries fast.
    """
    from recbole_bundlellm.teacher.settings import TeacherSettings

    values: dict[str, Any] = {"base_url": base_url, "max_tokens": 16, "timeout": 60.0, "max_retries": 3,
                              "backoff_base": 0.01, "backoff_max": 0.05}
    values.update(overrides)
    settings = TeacherSettings(**values)
    settings.validate()
    return settings


def need_llama_cpp() -> None:
    """Skip the calling test without ``llama_cpp.server`` (fail instead when CI requires it)."""
    from recbole_bundlellm.teacher.server import TeacherServerError, require_llama_cpp

    try:
        require_llama_cpp()
    except TeacherServerError as exc:
        if os.environ.get("BUNDLELLM_REQUIRE_TEACHER") == "1":
            pytest.fail(f"BUNDLELLM_REQUIRE_TEACHER=1 but the teacher server is missing: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def teacher_server() -> Iterator[Any]:
    """A running :class:`~recbole_bundlellm.teacher.server.TeacherServer` on a free port."""
    from recbole_bundlellm.teacher.server import TeacherServer

    need_llama_cpp()
    # One thread: test answers are a few tokens, and a single llama.cpp thread does not slow down
    # badly when other work shares the cores (two threads busy-wait on each other).
    server = TeacherServer(port=0, n_threads=1)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fault_proxy(teacher_server) -> Iterator[FaultProxy]:
    """A started :class:`FaultProxy` in front of ``teacher_server`` (fresh counters per test)."""
    # A server that died (in an earlier test, or in this one) fails here with its exit reason
    # instead of as a string of retried connection errors.
    teacher_server.check()
    proxy = FaultProxy(f"http://{teacher_server.host}:{teacher_server.port}")
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
    teacher_server.check()


@pytest.fixture
def teacher_settings() -> Callable[..., Any]:
    """The :func:`make_teacher_settings` factory: ``teacher_settings(base_url, **overrides)``."""
    return make_teacher_settings


# A stand-in for `python -m llama_cpp.server`: an HTTP server answering /v1/models and chat
# completions like the real one, or dying the way a llama.cpp build for another CPU does.
# Modes: ok | hang (never answers a completion) | die-at-start | die-on-chat | die-later (1 s after
# it answered the readiness probe). SIGILL is raised for real: the process dies of the signal.
FAKE_SERVER = r"""
import http.server, json, os, resource, signal, sys, threading, time

resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # dying of SIGILL must not leave a core file
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
print("fake teacher: loading model", flush=True)
if mode == "die-at-start":
    os.kill(os.getpid(), signal.SIGILL)


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.rstrip("/") != "/v1/models":
            return self._json(404, {"detail": "not found"})
        self._json(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
        if mode == "die-later":
            threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGILL)).start()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if mode == "die-on-chat":
            print("fake teacher: first completion", flush=True)
            os.kill(os.getpid(), signal.SIGILL)
        if mode == "hang":
            time.sleep(3600)
        self._json(200, {"object": "chat.completion", "model": "fake",
                         "choices": [{"index": 0, "finish_reason": "length",
                                      "message": {"role": "assistant", "content": "OK"}}],
                         "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})


http.server.HTTPServer((host, port), Handler).serve_forever()
"""


@pytest.fixture
def fake_teacher(monkeypatch, tmp_path) -> Callable[[str], Path]:
    """``fake_teacher(mode)`` makes the server module run :data:`FAKE_SERVER` in that mode instead of
    llama.cpp (for :class:`TeacherServer`, ``serve`` and ``check_server``); returns a model path
    to pass them (a file that exists; the stand-in never reads it)."""
    import tempfile

    from recbole_bundlellm.teacher import server as server_module

    # The server keeps the log of a process that died: let it keep it here, not in /tmp.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = tmp_path / "fake.gguf"
    model.write_bytes(b"GGUF stand-in")

    def use(mode: str) -> Path:
        def command(model_path: Any, *, host: str, port: int, **_: Any) -> list[str]:
            return [sys.executable, "-c", FAKE_SERVER, mode, host, str(port)]

        monkeypatch.setattr(server_module, "require_llama_cpp", lambda: None)
        monkeypatch.setattr(server_module, "server_command", command)
        return model

    return use
