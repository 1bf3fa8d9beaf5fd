"""Fixtures for the teacher: a real OpenAI-compatible server on the embedded GGUF, and a fault proxy.

``teacher_server`` is started once per test session (about 2 s). Without ``llama_cpp.server``
the tests that need it are skipped, unless ``BUNDLELLM_REQUIRE_TEACHER=1`` (CI sets it), which
makes a missing server a failure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
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
    proxy = FaultProxy(f"http://{teacher_server.host}:{teacher_server.port}")
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def teacher_settings() -> Callable[..., Any]:
    """The :func:`make_teacher_settings` factory: ``teacher_settings(base_url, **overrides)``."""
    return make_teacher_settings
