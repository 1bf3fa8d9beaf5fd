"""The teacher client against a real OpenAI-compatible server (llama.cpp on the embedded GGUF),
over real HTTP through a fault-injecting proxy. Nothing here mocks the openai client.

How a server process dies is tested with a stand-in process that really dies of SIGILL
(``fake_teacher`` in teacher_fixtures.py), so those tests need no llama.cpp."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from teacher_fixtures import need_llama_cpp

from recbole_bundlellm.knowledge.store import KnowledgeStore
from recbole_bundlellm.settings import SettingsError, load_settings
from recbole_bundlellm.teacher.calls import CallRecord, Usage, call_key
from recbole_bundlellm.teacher.client import TeacherClient, TeacherStats
from recbole_bundlellm.teacher.errors import TeacherError, TeacherRequestError, TeacherUnavailable
from recbole_bundlellm.teacher.server import (
    DEFAULT_ALIAS,
    INSTALL_HINT,
    REBUILD_HINT,
    TeacherServer,
    TeacherServerError,
    _check_port_free,
    check_server,
    exit_report,
    exit_status,
    serve,
    server_command,
)
from recbole_bundlellm.teacher.settings import TeacherSettings


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Answer in one short sentence."},
            {"role": "user", "content": text}]


def stored_lines(root: Path) -> list[dict]:
    path = root / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --------------------------------------------------------------------------- calls and the store


def test_call_is_stored_and_served_from_store(fault_proxy, teacher_settings, tmp_path):
    root = tmp_path / "store"
    settings = teacher_settings(fault_proxy.base_url)
    store = KnowledgeStore(root)
    client = TeacherClient(settings, store)
    messages = ask("Name a colour of a t-shirt.")
    with store.writer():
        record, cached = client.complete(messages)
        assert not cached
        assert record.text.strip()
        assert record.usage.prompt_tokens > 0 and record.usage.completion_tokens > 0
        assert record.finish_reason in ("stop", "length")
        assert record.attempts == 1 and record.latency_s > 0
        assert record.key == call_key(settings.model, messages, client.request_params())
        assert record.request == {"model": settings.model, "messages": messages,
                                  "params": {"temperature": 0.0, "seed": 0, "max_tokens": 16}}
        assert fault_proxy.requests == 1

        again, cached = client.complete(messages)
        assert cached and again.text == record.text
        assert client.chat(messages) == record.text
        assert fault_proxy.requests == 1  # served from the store: no HTTP at all

    assert client.stats.calls_made == 1 and client.stats.calls_cached == 2
    assert client.stats.usage.total_tokens == record.usage.total_tokens
    assert [row["key"] for row in stored_lines(root)] == [record.key]

    # A new process state: a fresh store object on the same folder, a fresh client.
    store2 = KnowledgeStore(root)
    client2 = TeacherClient(settings, store2)
    with store2.writer():
        assert client2.chat(messages) == record.text
        # Parameters are normalized before hashing: an int 0 is the same request as 0.0.
        assert client2.chat(messages, temperature=0, max_tokens=16) == record.text
    assert fault_proxy.requests == 1
    assert client2.stats.calls_made == 0 and client2.stats.calls_cached == 2
    assert client2.stats.usage.total_tokens == 0  # cached calls cost nothing


class DictCache:
    """The smallest :class:`~recbole_bundlellm.teacher.calls.CallCache`: a dict in memory."""

    def __init__(self) -> None:
        self.calls: dict[str, CallRecord] = {}

    def get_call(self, key: str) -> CallRecord | None:
        return self.calls.get(key)

    def put_call(self, call: CallRecord) -> bool:
        return self.calls.setdefault(call.key, call) is call


def test_any_call_cache_serves_the_client(fault_proxy, teacher_settings):
    cache = DictCache()
    client = TeacherClient(teacher_settings(fault_proxy.base_url), cache)
    first, cached = client.complete(ask("Name a shoe colour."))
    assert not cached and list(cache.calls) == [first.key]
    again, cached = client.complete(ask("Name a shoe colour."))
    assert cached and again is first and fault_proxy.requests == 1


def test_the_model_is_checked_once_and_the_answering_model_recorded(fault_proxy, teacher_settings, tmp_path):
    root = tmp_path / "store"
    settings = teacher_settings(fault_proxy.base_url)
    store = KnowledgeStore(root)
    client = TeacherClient(settings, store)
    unit = client.for_unit()
    with store.writer():
        unit.chat(ask("One colour?"))
        unit.chat(ask("Two colours?"))
    assert fault_proxy.gets == 1 and fault_proxy.requests == 2  # one GET /v1/models, before the first call
    record = store.get_call(unit.call_keys[0])
    assert record.response_model == DEFAULT_ALIAS and unit.response_models == [DEFAULT_ALIAS]
    assert stored_lines(root)[0]["response_model"] == DEFAULT_ALIAS
    assert record.key == call_key(settings.model, ask("One colour?"), client.request_params())  # keys unchanged
    store2 = KnowledgeStore(root)
    with store2.writer():  # served from the store: no check, no HTTP at all
        assert TeacherClient(settings, store2).chat(ask("One colour?")) == record.text
    assert fault_proxy.gets == 1 and fault_proxy.requests == 2


def test_a_model_the_endpoint_does_not_serve_is_refused(fault_proxy, teacher_settings, tmp_path):
    store = KnowledgeStore(tmp_path / "store")
    client = TeacherClient(teacher_settings(fault_proxy.base_url, model="gpt-4o"), store)
    with store.writer(), pytest.raises(TeacherError, match=r"does not serve model 'gpt-4o'; it serves: "
                                                           rf"{DEFAULT_ALIAS} \(set teacher.model"):
        client.complete(ask("Hello?"))
    assert fault_proxy.requests == 0 and store.calls() == []
    # A call already stored under that model name is still served (no check: no HTTP).
    cache = DictCache()
    params = client.request_params()
    cache.put_call(CallRecord(call_key("gpt-4o", ask("Hello?"), params), "gpt-4o", {}, "Hi.", "stop",
                              Usage(), "2026-01-01T00:00:00Z", 0.1))
    assert TeacherClient(teacher_settings(fault_proxy.base_url, model="gpt-4o"), cache).chat(ask("Hello?")) == "Hi."
    assert fault_proxy.gets == 1


def test_an_endpoint_without_a_model_list_is_taken_at_its_word(fault_proxy, teacher_settings):
    fault_proxy.models_status = 404
    client = TeacherClient(teacher_settings(fault_proxy.base_url, model="any-name"), DictCache())
    record, cached = client.complete(ask("Hello?"))
    assert not cached and record.text.strip() and fault_proxy.gets == 1
    assert record.model == "any-name" and record.response_model  # whatever the endpoint said answered


def test_teacher_imports_nothing_from_knowledge():
    # The teacher is the lower layer: importing it must not pull the knowledge package in.
    import recbole_bundlellm

    code = ("import sys, recbole_bundlellm.teacher.client, recbole_bundlellm.teacher.server; "
            "print(sorted(m for m in sys.modules if m.startswith('recbole_bundlellm.knowledge')))")
    root = str(Path(recbole_bundlellm.__file__).resolve().parents[1])  # this checkout, not an installed copy
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=root).stdout
    assert out.strip() == "[]"


def test_partial_content_travels_with_the_error():
    content = {"difficulty": 0.5, "answers": {"initial": "x"}}
    exc = TeacherRequestError("HTTP 400")
    assert exc.partial is None
    assert exc.with_partial(content) is exc
    content["difficulty"] = 1.0  # a copy was taken when the call failed
    assert exc.partial == {"difficulty": 0.5, "answers": {"initial": "x"}}
    assert TeacherUnavailable("down", partial={"a": 1}).partial == {"a": 1}
    assert isinstance(exc, TeacherError) and str(exc) == "HTTP 400"


def test_unit_teacher_tracks_its_calls(fault_proxy, teacher_settings, tmp_path):
    store = KnowledgeStore(tmp_path / "store")
    client = TeacherClient(teacher_settings(fault_proxy.base_url), store)
    unit = client.for_unit()
    with store.writer():
        first = unit.chat(ask("Say hello."))
        assert unit.chat(ask("Say hello.")) == first
        unit.chat(ask("Say hello."), max_tokens=8)  # other parameters: another key, another call
    assert unit.model == client.model == DEFAULT_ALIAS
    assert unit.calls_made == 2 and unit.calls_cached == 1
    assert len(unit.call_keys) == 3 and unit.call_keys[0] == unit.call_keys[1] != unit.call_keys[2]
    records = [store.get_call(k) for k in unit.call_keys]
    assert unit.usage.total_tokens == sum(r.usage.total_tokens for r in records)
    assert records[2].usage.completion_tokens <= 8
    assert fault_proxy.requests == 2


def test_stats_cost_and_json(fault_proxy, teacher_settings, tmp_path):
    settings = teacher_settings(fault_proxy.base_url, price_input_per_1m=2.0, price_output_per_1m=10.0)
    store = KnowledgeStore(tmp_path / "store")
    client = TeacherClient(settings, store)
    with store.writer():
        record, _ = client.complete(ask("Count to three."))
    expected = (record.usage.prompt_tokens * 2.0 + record.usage.completion_tokens * 10.0) / 1e6
    assert client.stats.cost(settings) == pytest.approx(expected) and expected > 0
    summary = json.loads(json.dumps(client.stats.to_json(settings)))
    assert summary["calls_made"] == 1 and summary["cost"] == pytest.approx(expected)
    assert summary["usage"]["total_tokens"] == record.usage.total_tokens
    assert summary["call_seconds"] > 0
    assert TeacherStats().to_json() == {"calls_made": 0, "calls_cached": 0, "retries": 0, "errors": {},
                                        "usage": {"prompt_tokens": 0, "completion_tokens": 0,
                                                  "total_tokens": 0}, "call_seconds": 0.0,
                                        "answers_truncated": 0, "structured_calls": 0,
                                        "structured_refusals": 0, "structured_format": None}


# --------------------------------------------------------------------------- concurrency


def test_concurrent_distinct_prompts_respect_the_limit(fault_proxy, teacher_settings, tmp_path):
    root = tmp_path / "store"
    store = KnowledgeStore(root)
    client = TeacherClient(teacher_settings(fault_proxy.base_url, concurrency=2), store)
    prompts = [ask(f"Describe item number {i} in five words.") for i in range(4)]
    # Each request waits a little in the proxy, so a third one would overlap if it were let through.
    fault_proxy.script([("delay", 0.3)] * 4)
    with store.writer(), ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda m: client.complete(m), prompts))
    assert all(not cached and rec.text.strip() for rec, cached in results)
    assert len({rec.key for rec, _ in results}) == 4
    assert fault_proxy.requests == 4
    assert fault_proxy.max_in_flight == 2  # bounded by concurrency=2 (and reached)
    lines = stored_lines(root)
    assert sorted(row["key"] for row in lines) == sorted(rec.key for rec, _ in results)  # each once


def test_same_prompt_from_many_threads_is_one_request(fault_proxy, teacher_settings, tmp_path):
    store = KnowledgeStore(tmp_path / "store")
    client = TeacherClient(teacher_settings(fault_proxy.base_url, concurrency=4), store)
    messages = ask("What goes with a red t-shirt?")
    fault_proxy.script([("delay", 0.5)])  # keep the first call in flight while the others arrive
    barrier = threading.Barrier(4)

    def worker(_: int):
        barrier.wait()
        return client.complete(messages)

    with store.writer(), ThreadPoolExecutor(4) as pool:
        results = list(pool.map(worker, range(4)))
    assert fault_proxy.requests == 1
    assert len({rec.text for rec, _ in results}) == 1
    assert sorted(cached for _, cached in results) == [False, True, True, True]
    assert client.stats.calls_made == 1 and client.stats.calls_cached == 3
    assert len(stored_lines(tmp_path / "store")) == 1


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(("action", "reason"), [
    (("status", 429), "http_429"),
    (("status", 500), "http_500"),
    (("status", 503), "http_503"),
    ("drop", "connection"),
    (("delay", 4.0), "timeout"),
])
def test_transient_faults_are_retried(fault_proxy, teacher_settings, tmp_path, caplog, action, reason):
    store = KnowledgeStore(tmp_path / "store")
    # A short client timeout so that the 4 s delay counts as a timeout (a real call takes < 1 s).
    client = TeacherClient(teacher_settings(fault_proxy.base_url, timeout=3.0), store)
    fault_proxy.script([action])
    with caplog.at_level(logging.WARNING, logger="recbole_bundlellm.teacher"), store.writer():
        record, cached = client.complete(ask(f"Say something about {reason}."))
    assert not cached and record.text.strip()
    assert record.attempts >= 2
    assert client.stats.retries >= 1 and client.stats.errors.get(reason, 0) >= 1
    assert client.stats.calls_made == 1
    assert fault_proxy.requests >= 2
    if reason != "timeout":  # a slow machine may time out the retry too; the others are exact
        assert client.stats.retries == 1 and record.attempts == 2 and fault_proxy.requests == 2
        assert client.stats.errors == {reason: 1}
    assert any(reason in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert store.get_call(record.key) == record


def test_persistent_failure_raises_unavailable_and_keeps_the_store(fault_proxy, teacher_settings, tmp_path):
    root = tmp_path / "store"
    settings = teacher_settings(fault_proxy.base_url, max_retries=2)
    store = KnowledgeStore(root)
    client = TeacherClient(settings, store)
    with store.writer():
        earlier, _ = client.complete(ask("First question."))
        fault_proxy.script([("status", 500)] * 3)  # the first attempt and both retries fail
        with pytest.raises(TeacherUnavailable) as info:
            client.complete(ask("Second question."))
    message = str(info.value)
    assert fault_proxy.base_url in message and settings.model in message
    assert "3 attempts" in message and "http_500" in message
    assert fault_proxy.requests == 1 + 3 and fault_proxy.forwarded == 1
    assert client.stats.retries == 2 and client.stats.errors == {"http_500": 3}

    reopened = KnowledgeStore(root)
    assert [c.key for c in reopened.calls()] == [earlier.key]
    assert reopened.get_call(earlier.key).text == earlier.text


def test_bad_request_is_not_retried(fault_proxy, teacher_settings, tmp_path):
    store = KnowledgeStore(tmp_path / "store")
    client = TeacherClient(teacher_settings(fault_proxy.base_url), store)
    fault_proxy.script([("status", 400)])
    with store.writer(), pytest.raises(TeacherRequestError, match="HTTP 400"):
        client.complete(ask("A rejected question."))
    assert fault_proxy.requests == 1
    assert client.stats.retries == 0 and client.stats.errors == {"http_400": 1}
    assert store.calls() == []


@pytest.mark.parametrize("code", [401, 403])
def test_refused_credentials_are_unavailable_at_once(fault_proxy, teacher_settings, tmp_path, code):
    store = KnowledgeStore(tmp_path / "store")
    client = TeacherClient(teacher_settings(fault_proxy.base_url, api_key_env="BUNDLELLM_TEST_KEY"), store)
    fault_proxy.script([("status", code)])
    with store.writer(), pytest.raises(TeacherUnavailable, match="BUNDLELLM_TEST_KEY"):
        client.complete(ask("Who am I?"))
    assert fault_proxy.requests == 1 and client.stats.retries == 0


def test_api_key_is_sent_but_never_stored_or_logged(fault_proxy, teacher_settings, tmp_path, monkeypatch,
                                                     caplog):
    marker = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", marker)
    root = tmp_path / "store"
    settings = teacher_settings(fault_proxy.base_url)
    store = KnowledgeStore(root)
    client = TeacherClient(settings, store)
    fault_proxy.script(["pass", ("status", 429), "pass", ("status", 400), ("status", 401)])
    errors = []
    with caplog.at_level(logging.DEBUG), store.writer():
        client.complete(ask("Key test one."))
        client.complete(ask("Key test two."))  # retried once: a WARNING line
        for text in ("Key test three.", "Key test four."):
            try:
                client.complete(ask(text))
            except (TeacherRequestError, TeacherUnavailable) as exc:
                errors.append(exc)
    assert len(errors) == 2 and len(store.calls()) == 2
    # The key did go out (so the test means something) ...
    assert all(h.get("authorization") == f"Bearer {marker}" for h in fault_proxy.seen_headers)
    # ... and is nowhere else.
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "calls.jsonl" for p in files)
    for path in files:
        assert marker not in path.read_text(errors="replace"), path
    assert caplog.records and marker not in caplog.text
    assert all(marker not in str(exc) for exc in errors)
    assert marker not in json.dumps(settings.public()) and marker not in json.dumps(client.stats.to_json())
    assert settings.public()["api_key_env"] == "OPENAI_API_KEY"


# --------------------------------------------------------------------------- settings


def test_settings_defaults_identity_and_public(monkeypatch):
    settings = load_settings(TeacherSettings, {"base_url": "http://127.0.0.1:9/v1", "temperature": 0},
                             "teacher")
    assert settings.model == DEFAULT_ALIAS
    assert settings.temperature == 0.0 and isinstance(settings.temperature, float)
    assert settings.identity() == {"model": DEFAULT_ALIAS, "temperature": 0.0, "seed": 0, "max_tokens": 256,
                                   "structured_outputs": "auto"}
    public = settings.public()
    assert public["base_url"] == "http://127.0.0.1:9/v1" and public["concurrency"] == 2
    json.dumps(public)
    secret = TeacherSettings(base_url="https://user:hunter2@example.test/v1").public()
    assert "hunter2" not in json.dumps(secret)


def test_settings_unknown_key_and_bad_values():
    with pytest.raises(SettingsError, match="did you mean 'concurrency'"):
        load_settings(TeacherSettings, {"concurency": 2}, "teacher")
    with pytest.raises(SettingsError, match="teacher.concurrency must be an integer >= 1; got 0"):
        load_settings(TeacherSettings, {"concurrency": 0}, "teacher")
    with pytest.raises(SettingsError, match="teacher.max_tokens"):
        load_settings(TeacherSettings, {"max_tokens": "many"}, "teacher")
    for bad in ({"max_tokens": 0}, {"temperature": -0.1}, {"timeout": 0}, {"max_retries": -1},
                {"base_url": "127.0.0.1:8088"}):
        with pytest.raises(SettingsError, match=next(iter(bad))):
            load_settings(TeacherSettings, bad, "teacher")


def test_missing_base_url_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    settings = TeacherSettings()
    with pytest.raises(ValueError, match="OPENAI_BASE_URL"):
        settings.resolved_base_url()
    with pytest.raises(ValueError, match="teacher.base_url"):
        TeacherClient(settings, KnowledgeStore(tmp_path / "store"))
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1234/v1/")
    assert settings.resolved_base_url() == "http://127.0.0.1:1234/v1"
    assert TeacherClient(settings, KnowledgeStore(tmp_path / "store")).base_url == "http://127.0.0.1:1234/v1"


def test_unreachable_endpoint_is_unavailable(teacher_settings, tmp_path):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = KnowledgeStore(tmp_path / "store")
    client = TeacherClient(teacher_settings(f"http://127.0.0.1:{port}/v1", max_retries=1), store)
    with store.writer(), pytest.raises(TeacherUnavailable, match=f"127.0.0.1:{port}.*2 attempts.*connection"):
        client.chat(ask("Anyone there?"))
    assert client.stats.errors == {"connection": 2}


# --------------------------------------------------------------------------- the server


def test_server_command_shape(tmp_path):
    cmd = server_command(tmp_path / "m.gguf", port=1234, n_ctx=4096, n_threads=2)
    assert cmd[:3] == [sys.executable, "-m", "llama_cpp.server"]
    flags = dict(zip(cmd[3::2], cmd[4::2]))
    assert flags["--model"] == str(tmp_path / "m.gguf")
    assert flags["--model_alias"] == DEFAULT_ALIAS == TeacherSettings().model
    assert flags["--host"] == "127.0.0.1" and flags["--port"] == "1234"
    assert flags["--n_ctx"] == "4096" and flags["--n_threads"] == "2" and flags["--n_threads_batch"] == "2"
    default = dict(zip(server_command(tmp_path / "m.gguf")[3::2], server_command(tmp_path / "m.gguf")[4::2]))
    assert default["--port"] == "8088" and int(default["--n_threads"]) >= 1
    assert server_command()[4].endswith(".gguf")  # the embedded model by default


def test_server_flags_exist_in_llama_cpp():
    need_llama_cpp()
    from llama_cpp.server import settings
    fields = set(settings.ModelSettings.model_fields) | set(settings.ServerSettings.model_fields)
    for flag in server_command("/x/m.gguf")[3::2]:
        assert flag.removeprefix("--") in fields, flag


def test_server_missing_model_file(tmp_path):
    server = TeacherServer(tmp_path / "missing.gguf")
    with pytest.raises(TeacherServerError, match="not found.*missing.gguf"):
        server.start()
    assert not server.running


def test_server_bad_model_file_reports_its_log(tmp_path):
    need_llama_cpp()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a gguf file")
    log_path = tmp_path / "server.log"
    server = TeacherServer(bad, startup_timeout=60, log_path=log_path)
    with pytest.raises(TeacherServerError, match="exited with code") as info:
        server.start()
    assert not server.running
    assert str(log_path) in str(info.value) and "Traceback" in str(info.value)  # the log's tail
    assert log_path.is_file()  # a log the caller chose is kept


def test_server_answers_models(teacher_server):
    import urllib.request

    assert teacher_server.running and teacher_server.base_url.endswith("/v1")
    with urllib.request.urlopen(f"{teacher_server.base_url}/models", timeout=10) as resp:
        ids = [m["id"] for m in json.load(resp)["data"]]
    assert DEFAULT_ALIAS in ids


def test_server_refuses_a_taken_port(tmp_path):
    import socket

    need_llama_cpp()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        server = TeacherServer(port=sock.getsockname()[1], log_path=tmp_path / "server.log")
        with pytest.raises(TeacherServerError, match="cannot serve on 127.0.0.1"):
            server.start()
    assert not server.running


# --------------------------------------------------------------------------- a server that dies


def wait_for(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def post_chat(base_url: str, timeout: float = 10.0) -> bytes:
    body = json.dumps({"model": DEFAULT_ALIAS, "messages": ask("Hello?"), "max_tokens": 4}).encode()
    request = urllib.request.Request(f"{base_url}/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=timeout) as resp:
        return resp.read()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_exit_descriptions():
    assert exit_report(1) == "the teacher server exited with code 1"
    assert exit_report(-4, "before answering") == (
        f"the teacher server was killed by SIGILL (exit status 132) before answering: {REBUILD_HINT}")
    assert exit_report(132) == f"the teacher server exited with code 132 (SIGILL, as a shell reports it): {REBUILD_HINT}"
    assert exit_report(-15) == "the teacher server was killed by SIGTERM (exit status 143)"
    assert "memory" in exit_report(-9)
    assert [exit_status(c) for c in (-4, 1, 0, 3)] == [132, 1, 1, 3]
    assert "scripts/setup.sh --test --rebuild-teacher" in REBUILD_HINT and "CPU" in REBUILD_HINT


def test_server_dying_before_it_answers_names_the_signal(fake_teacher, tmp_path):
    model = fake_teacher("die-at-start")
    log_path = tmp_path / "server.log"
    server = TeacherServer(model, log_path=log_path, startup_timeout=60)
    with pytest.raises(TeacherServerError) as info:
        server.start()
    message = str(info.value)
    assert message.startswith(f"the teacher server was killed by SIGILL (exit status 132) before answering: "
                              f"{REBUILD_HINT}\n")
    assert str(log_path) in message and "fake teacher: loading model" in message  # the log's tail
    assert not server.running


def test_server_death_after_startup_is_logged_at_once_and_exposed(fake_teacher, caplog):
    server = TeacherServer(fake_teacher("die-on-chat"), startup_timeout=60)
    with caplog.at_level(logging.ERROR, logger="recbole_bundlellm.teacher"):
        server.start()
        try:
            server.check()  # running: no error
            assert server.failure is None
            with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
                post_chat(server.base_url)  # the server dies of SIGILL on its first completion
            assert wait_for(lambda: server.failure is not None)
            assert not server.running
            errors = [r for r in caplog.records if r.levelno == logging.ERROR]
            assert len(errors) == 1 and errors[0].getMessage() == server.failure
            assert "killed by SIGILL" in server.failure and REBUILD_HINT in server.failure
            assert "fake teacher: first completion" in server.failure  # the log's tail
            with pytest.raises(TeacherServerError, match="killed by SIGILL"):
                server.check()
            log_path = server.log_path
        finally:
            server.stop()
    assert log_path is not None and log_path.is_file()  # the failure names it: kept


def test_a_stopped_server_is_no_failure(fake_teacher, caplog):
    server = TeacherServer(fake_teacher("ok"), startup_timeout=60)
    with caplog.at_level(logging.ERROR, logger="recbole_bundlellm.teacher"):
        with server:
            assert json.loads(post_chat(server.base_url))["choices"][0]["message"]["content"] == "OK"
            log_path = server.log_path
        time.sleep(0.3)  # time for the watcher to see the exit stop() caused
    assert server.failure is None and not caplog.records
    assert log_path is not None and not log_path.exists()  # its own log is removed after a clean stop
    with pytest.raises(TeacherServerError, match="not started"):
        server.check()


def test_port_with_only_time_wait_leftovers_is_free():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = listener.accept()
    conn.close()  # the server side closes first (as after a readiness probe): its end waits in TIME_WAIT
    assert client.recv(1) == b""
    client.close()
    listener.close()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # the port does have a leftover: a bind without SO_REUSEADDR fails
    _check_port_free("127.0.0.1", port)  # ... but no server owns it


@pytest.mark.parametrize("reuse", [0, 1])
def test_port_with_a_live_listener_is_taken(reuse):
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(TeacherServerError, match=f"cannot serve on 127.0.0.1:{port}.*already running"):
            _check_port_free("127.0.0.1", port)


def test_server_restarts_on_the_same_port_at_once(fake_teacher):
    model = fake_teacher("ok")
    port = free_port()
    for _ in range(2):  # the readiness probe and the chat leave TIME_WAIT connections on the port
        with TeacherServer(model, port=port, startup_timeout=60) as server:
            assert server.port == port
            assert json.loads(post_chat(server.base_url))["choices"][0]["message"]["content"] == "OK"


def test_serve_reports_a_death_with_signal_and_output(fake_teacher, capsys):
    model = fake_teacher("die-later")
    code = serve(model, port=free_port())
    out, err = capsys.readouterr()
    assert code == 132
    assert "ready." in out and "fake teacher: loading model" in out  # relayed as it came
    last = err.strip().splitlines()[-1]
    assert last == f"error: the teacher server was killed by SIGILL (exit status 132): {REBUILD_HINT}"
    assert "last output lines:\nfake teacher: loading model" in err


def test_check_server_reports_a_server_dying_on_its_first_completion(fake_teacher, caplog):
    with caplog.at_level(logging.ERROR, logger="recbole_bundlellm.teacher"), \
            pytest.raises(TeacherServerError) as info:
        check_server(fake_teacher("die-on-chat"), timeout=60)
    assert not caplog.records  # reported once: by the error, not by the watcher's log as well
    message = str(info.value)
    assert message.startswith("the teacher server was killed by SIGILL (exit status 132) while answering a "
                              f"chat completion: {REBUILD_HINT}\n")
    assert "fake teacher: first completion" in message


def test_check_server_reports_no_answer_in_time(fake_teacher):
    with pytest.raises(TeacherServerError, match="did not answer a 4-token chat completion within"):
        check_server(fake_teacher("hang"), timeout=6)


def test_check_server_describes_a_working_server(fake_teacher):
    line = check_server(fake_teacher("ok"), timeout=60)
    assert line.startswith("teacher OK: ") and "\n" not in line
    assert "fake.gguf" in line and "answered 'OK' (1 tokens)" in line


def test_check_server_without_llama_cpp_gives_the_install_hint(monkeypatch, tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # what find_spec reports for a missing package
    with pytest.raises(TeacherServerError, match="not installed") as info:
        check_server(model, timeout=10)
    assert INSTALL_HINT in str(info.value)


def test_check_server_with_the_real_server():
    need_llama_cpp()
    line = check_server(timeout=120, n_threads=1)
    assert line.startswith("teacher OK: llama-cpp-python ") and ".gguf" in line and "answered " in line


def test_serve_says_truthfully_where_it_listens():
    from recbole_bundlellm.teacher.server import serving_line

    local = serving_line("m.gguf", "smol", "127.0.0.1", 8088)
    assert "on http://127.0.0.1:8088/v1" in local and "every network interface" not in local
    everywhere = serving_line("m.gguf", "smol", "0.0.0.0", 8088)
    assert "on every network interface (0.0.0.0:8088)" in everywhere and "anyone who can reach" in everywhere


@pytest.mark.parametrize("key, typo, cli_typo, allowed, meant", [
    ("mode", "bach", "batched", "'sync', 'batch'", "batch"),
    ("structured_outputs", "of", "no", "'auto', 'on', 'off'", "off"),
])
def test_a_bad_teacher_choice_says_what_it_could_be(tiny_data, tmp_path, capsys, key, typo, cli_typo, allowed, meant):
    """A mistyped teacher choice: one line with the choices and the likely one, in code and at the command line."""
    from recbole_bundlellm.commands.cli import main
    from recbole_bundlellm.teacher.settings import TeacherSettings

    with pytest.raises(SettingsError) as exc:
        load_settings(TeacherSettings, {key: typo}, "teacher")
    assert str(exc.value) == f"teacher.{key} must be one of {allowed}; got '{typo}'; did you mean '{meant}'?"
    config = {"dataset": "clothing", "data_path": str(tiny_data), "knowledge_dir": str(tmp_path / "kn"),
              "knowledge_types": ["thoughts"], "teacher": {"base_url": "http://127.0.0.1:9/v1", key: cli_typo}}
    assert main(["distill", "--no-progress", *[f"--{k}={json.dumps(v)}" for k, v in config.items()]]) == 2
    err = capsys.readouterr().err.strip()
    assert f"teacher.{key} must be one of {allowed}; got '{cli_typo}'" in err and len(err.splitlines()) == 1
