"""Fixtures for the teacher: a real OpenAI-compatible server on the embedded GGUF, a fault proxy,
a stand-in server process for the ways a server dies, and the ways a disk fails
(``disk_full``, ``read_only``).

``teacher_server`` is started once per test session (about 2 s). Without ``llama_cpp.server``
the tests that need it are skipped, unless ``BUNDLELLM_REQUIRE_TEACHER=1`` (CI sets it), which
makes a missing server a failure. ``fake_teacher`` needs nothing but Python.
"""

from __future__ import annotations

import errno
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


# -- a disk that fills up and a folder without write permission ----------------------------------
class DiskFull:
    """``os.write`` as on a disk that fills up, for the files named ``name`` only.

    The first ``after`` writes to them go through; then, when ``short``, one write is cut short
    (half its bytes written, as the kernel does when the last blocks run out) and every later one
    fails with ENOSPC, until :meth:`free` (someone freed space)."""

    def __init__(self, name: str, after: int, short: bool) -> None:
        self.name, self.after, self.short = name, after, short
        self.written = 0  # writes to the file that went through
        self.refused = 0  # writes that failed or were cut short
        self.freed = False
        self._real = os.write

    def free(self) -> None:
        self.freed = True

    def _target(self, fd: int) -> bool:
        try:
            return Path(os.readlink(f"/proc/self/fd/{fd}")).name == self.name
        except OSError:
            return False

    def __call__(self, fd: int, data: bytes) -> int:
        if self.freed or not self._target(fd):
            return self._real(fd, data)
        if self.written < self.after:
            self.written += 1
            return self._real(fd, data)
        self.refused += 1
        if self.short and self.refused == 1:
            return self._real(fd, bytes(data)[:max(1, len(data) // 2)])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def disk_full(monkeypatch) -> Callable[..., DiskFull]:
    """``disk_full(name, after=0, short=True)``: the disk fills up after ``after`` writes to files
    named ``name`` (see :class:`DiskFull`); ``.free()`` frees it again."""
    from recbole_bundlellm.knowledge import store as store_module

    def fill(name: str, *, after: int = 0, short: bool = True) -> DiskFull:
        disk = DiskFull(name, after, short)
        # The store module's ``os`` is the os module: other writers pass through by their file name.
        monkeypatch.setattr(store_module.os, "write", disk)
        return disk

    return fill


@pytest.fixture
def read_only(monkeypatch) -> Callable[[Path], None]:
    """``read_only(folder)``: creating or opening for writing anything under ``folder`` fails with
    EACCES, and ``os.access`` says it is not writable, as for a user who is not root in a folder
    (and files) without write permission. Tests often run as root, where chmod stops nothing."""
    import builtins
    import io

    folders: list[Path] = []
    real_os_open, real_open, real_access, real_mkdir = os.open, builtins.open, os.access, os.mkdir
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def denied(path: Any) -> bool:
        if isinstance(path, int):
            return False
        p = Path(os.fsdecode(path)).resolve()
        return any(p == f or f in p.parents for f in folders)

    def refuse(path: Any) -> PermissionError:
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

    def os_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if flags & writing and denied(path):
            raise refuse(path)
        return real_os_open(path, flags, mode, dir_fd=dir_fd)

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(c in mode for c in "wax+") and denied(file):
            raise refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def access(path: Any, mode: int, **kwargs: Any) -> bool:
        if mode & os.W_OK and denied(path):
            return False
        return real_access(path, mode, **kwargs)

    def mkdir(path: Any, mode: int = 0o777, **kwargs: Any) -> None:
        if denied(path) and not Path(os.fsdecode(path)).exists():
            raise refuse(path)
        real_mkdir(path, mode, **kwargs)

    for module, name, fake in ((os, "open", os_open), (builtins, "open", open_), (io, "open", open_),
                               (os, "access", access), (os, "mkdir", mkdir)):
        monkeypatch.setattr(module, name, fake)
    return lambda folder: folders.append(Path(folder).resolve())


#: The fake teacher's answers to the built-in rules and thoughts extractors' turns (tests of the
#: teacher's modes and formats share them).
RULES_ANSWER = "1. Products of one category are often bought together.\n2. Accessories go with the device they fit."
THOUGHT_ANSWER = "product1 and product2 form bundle1: both serve one intent, dressing for one occasion together."


def extractor_answer(messages: list[dict[str, str]]) -> str:
    """What the fake teacher answers the rules and thoughts extractors: rules, a thought, else a bundle."""
    last = messages[-1]["content"]
    if "general rules" in last:
        return RULES_ANSWER
    if "Explain step by step" in last:
        return THOUGHT_ANSWER
    return '{"bundles": [["product1", "product2"]]}'
