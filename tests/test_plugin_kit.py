"""The testing kit (recbole_bundlellm.testing) and the teacher's replies: scripted teachers
in-process and over HTTP (the real client and store in between), the tiny dataset shipped with
the package, hosts with or without the built-in plugins, and a workspace that distils and runs."""

from __future__ import annotations

import sys
import tomllib
import types
from pathlib import Path

import pytest

from recbole_bundlellm.extension.hookspecs import hookimpl
from recbole_bundlellm.knowledge.extractor import Extraction, KnowledgeExtractor
from recbole_bundlellm.knowledge.records import KnowledgeItem
from recbole_bundlellm.teacher.errors import TeacherRequestError, TeacherUnavailable
from recbole_bundlellm.testing import (
    TINY_DOMAIN,
    Answer,
    FakeTeacherServer,
    ScriptedTeacher,
    Workspace,
    plugin_host,
    prepare_tiny_data,
    tiny_raw_dir,
    tiny_sessions,
)

REPO = Path(__file__).resolve().parents[1]
ASK = [{"role": "user", "content": "Name one colour."}]


@pytest.fixture(autouse=True)
def _no_env_toggles(monkeypatch):
    monkeypatch.delenv("BUNDLELLM_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("BUNDLELLM_STRICT_PLUGINS", raising=False)


# -- the tiny dataset ------------------------------------------------------------------------------
def test_the_tiny_dataset_ships_as_package_data():
    root = tiny_raw_dir()
    package = REPO / "recbole_bundlellm"
    assert root.is_relative_to(package) and (root / "README.md").is_file()
    files = sorted(p.relative_to(package) for p in root.rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".csv"]) == 11
    # The tests' old path is a link to it: one copy of the data.
    assert (REPO / "tests" / "fixtures" / "tiny_raw").resolve() == root
    # Every file is matched by pyproject's package-data, so a wheel carries it.
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "recbole_bundlellm"]
    matched = {p.relative_to(package) for pattern in patterns for p in package.glob(pattern)}
    assert set(files) <= matched, sorted(set(files) - matched)


def test_prepared_tiny_data_and_its_training_sessions(tmp_path):
    data = prepare_tiny_data(tmp_path / "data")
    assert (data / TINY_DOMAIN / f"{TINY_DOMAIN}.train.inter").is_file()
    sessions = tiny_sessions(data)
    assert [s.session_id for s in sessions] == ["0", "2", "3", "4", "5", "6", "7", "9", "11"]
    assert all(s.bundles and len(s.intents) == len(s.bundles) for s in sessions)


# -- hosts -----------------------------------------------------------------------------------------
def test_plugin_host_with_or_without_the_builtins_and_the_installed_plugins():
    import bundlellm_keywords

    with plugin_host() as builtins_only:
        assert {s.name for s in builtins_only.statuses} == {"models", "metrics", "patterns", "rules", "thoughts",
                                                             "samplers", "adaptation", "fusion", "generation"}
    with plugin_host(installed=True) as everything:
        assert "keywords" in everything.names("extractor")
    with plugin_host(bundlellm_keywords, builtins=False) as alone:
        (status,) = alone.statuses
        # A module is named like the entry point that installs it, and keeps its distribution.
        assert (status.name, status.status, status.distribution) == ("keywords", "loaded", "bundlellm-keywords")
        assert alone.names("extractor") == ["keywords"] and alone.models.names() == [] and not alone.metrics


# -- the teacher's replies, in-process ---------------------------------------------------------------
def test_scripted_teacher_replies_in_order_with_finish_reason_usage_and_the_cache():
    teacher = ScriptedTeacher(["Blue.", Answer.cut("Red and gre"), Answer("Green.", prompt_tokens=7,
                                                                            completion_tokens=2)])
    first = teacher.reply(ASK)
    assert (first.text, first.finish_reason, first.truncated, first.cached) == ("Blue.", "stop", False, False)
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (3, 1)  # words, by default
    again = teacher.reply(ASK)  # the same request: the first answer, from the "store"
    assert (again.text, again.cached, again.usage) == ("Blue.", True, first.usage) and teacher.left == 2
    cut = teacher.reply(ASK, max_tokens=3)  # other parameters: another request
    assert cut.truncated and cut.finish_reason == "length"
    assert teacher.chat([{"role": "user", "content": "Another?"}]) == "Green."
    assert [c.max_tokens for c in teacher.calls] == [None, 3, None]
    with pytest.raises(AssertionError, match="no answer left for request #4"):
        teacher.chat([{"role": "user", "content": "More?"}])


def test_scripted_teacher_errors_are_the_real_teachers():
    teacher = ScriptedTeacher([Answer.error(400, "prompt too long"), Answer.error(503, "overloaded"),
                               ValueError("raised as given")], default="fine")
    with pytest.raises(TeacherRequestError, match="HTTP 400.*prompt too long"):
        teacher.chat([{"role": "user", "content": "a"}])
    with pytest.raises(TeacherUnavailable, match="HTTP 503: overloaded"):
        teacher.chat([{"role": "user", "content": "b"}])
    with pytest.raises(ValueError, match="raised as given"):
        teacher.chat([{"role": "user", "content": "c"}])
    assert teacher.chat([{"role": "user", "content": "d"}]) == "fine"  # the default, once the list is used
    by_content = ScriptedTeacher(lambda messages: messages[-1]["content"].upper())
    assert by_content.chat([{"role": "user", "content": "echo"}]) == "ECHO" and by_content.left is None


# -- the teacher's replies over HTTP, through the real client and store -------------------------------
def _client(server, store, **overrides):
    from recbole_bundlellm.teacher.client import TeacherClient
    from recbole_bundlellm.teacher.settings import TeacherSettings

    return TeacherClient(TeacherSettings(**server.config(**overrides)), store)


def test_replies_keep_finish_reason_and_usage_through_the_store(tmp_path):
    from recbole_bundlellm.knowledge.store import KnowledgeStore

    store = KnowledgeStore(tmp_path / "kn")
    with FakeTeacherServer([Answer.cut("Blue, red and"), "unused"]) as server, store.writer():
        client = _client(server, store)
        unit = client.for_unit()
        first = unit.reply(ASK, max_tokens=4)
        assert (first.text, first.finish_reason, first.truncated, first.cached) == ("Blue, red and", "length", True,
                                                                                     False)
        assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (3, 3)
        assert first.model == server.model and first.key == unit.call_keys[0]
        # Asked again (by reply or chat), the stored call answers: same finish reason and usage.
        again = unit.reply(ASK, max_tokens=4)
        assert (again.text, again.finish_reason, again.usage, again.cached) == (first.text, "length", first.usage,
                                                                                True)
        assert unit.chat(ASK, max_tokens=4) == first.text
        assert len(server.requests) == 1 and server.requests[0].max_tokens == 4
        assert (unit.calls_made, unit.calls_cached) == (1, 2)
        assert (client.stats.calls_made, client.stats.calls_cached, client.stats.usage.completion_tokens) == (1, 2, 3)
    # A later run (a new client, the same store) is answered from disk, the call as it was made.
    with FakeTeacherServer([]) as server, store.writer():
        later = _client(server, KnowledgeStore(tmp_path / "kn")).reply(ASK, max_tokens=4)
        assert (later.finish_reason, later.usage, later.cached) == ("length", first.usage, True)
        assert server.requests == []


def test_http_errors_of_the_fake_server_reach_the_client_as_the_real_ones(tmp_path):
    from recbole_bundlellm.knowledge.store import KnowledgeStore

    store = KnowledgeStore(tmp_path / "kn")
    script = [Answer.error(400, "prompt too long"), Answer.error(500, "busy"), Answer.error(500, "busy")]
    with FakeTeacherServer(script) as server, store.writer():
        client = _client(server, store, max_retries=1)
        with pytest.raises(TeacherRequestError, match="HTTP 400.*prompt too long"):
            client.chat(ASK)
        assert len(server.requests) == 1  # not retried
        with pytest.raises(TeacherUnavailable, match="failed 2 attempts"):
            client.chat([{"role": "user", "content": "Again?"}])
        assert len(server.requests) == 3  # one retry


# -- a workspace: a plugin whose extractor calls the teacher, distilled and run -----------------------
class _Colours(KnowledgeExtractor):
    name = "colours"
    needs_teacher = True

    def extract_session(self, session, teacher):
        reply = teacher.reply([{"role": "user", "content": "Colours of: " + "; ".join(session.titles)}], max_tokens=8)
        if reply.truncated:
            return Extraction.failed("cut off", answer=reply.text)
        return Extraction("ok", {"colours": reply.text, "tokens": reply.usage.completion_tokens}, reply.text)

    def aggregate(self, records, domain):
        return [KnowledgeItem(self.name, domain, r.text, r.session_id, support=1.0) for r in records]


def _colours_plugin() -> types.ModuleType:
    module = types.ModuleType("colours_plugin")

    @hookimpl
    def register_knowledge_extractors(register):
        register(_Colours)

    module.register_knowledge_extractors = register_knowledge_extractors
    return module


def test_workspace_distills_with_a_fake_teacher_and_runs(tmp_path):
    from recbole_bundlellm.knowledge.store import KnowledgeStore

    def colours(messages):
        return Answer.cut("White, navy and") if "Socks" in messages[-1]["content"] else "White and navy."

    with Workspace(tmp_path, ("colours", _colours_plugin())) as ws, FakeTeacherServer(colours) as server:
        summary = ws.distill(knowledge_types=["colours"], teacher=server,
                             sampling={"sampler": "random", "ratio": 0.5, "seed": 3})
        kind = summary.kinds["colours"]
        assert (kind.ok, kind.failed, kind.failure_reasons) == (4, 5, {"cut off": 5})  # 5 sessions sell socks
        assert summary.teacher["calls_made"] == 9 and len(server.requests) == 9
        records = KnowledgeStore(ws.knowledge_dir).records("colours", TINY_DOMAIN)
        assert all(r.provenance["plugin"] == "colours" and r.provenance["teacher_model"] == server.model
                   for r in records)
        assert summary.knowledge_set_counts["colours"] >= 1
        result = ws.run("Freq")
        assert result.test_result["exactf1"] > 0 and result.output_dir.is_relative_to(tmp_path)
        assert len(ws.sessions()) == 9


def test_workspace_distill_names_the_teachers_it_takes(tmp_path):
    with Workspace(tmp_path, ("colours", _colours_plugin())) as ws:
        with pytest.raises(TypeError, match="FakeTeacherServer or a `teacher:` settings mapping, not a ScriptedTeacher"):
            ws.distill(knowledge_types=["colours"], teacher=ScriptedTeacher(["red"]))


class _Crashing(_Colours):
    name = "crashing"
    needs_teacher = False

    def extract_session(self, session, teacher):
        raise KeyError("oops")


def test_a_crashing_extractor_in_strict_mode_names_itself_and_the_session(tmp_path):
    from recbole_bundlellm.errors import BundleLLMError

    module = types.ModuleType("crashing_plugin")

    @hookimpl
    def register_knowledge_extractors(register):
        register(_Crashing)

    module.register_knowledge_extractors = register_knowledge_extractors
    with Workspace(tmp_path / "strict", ("crashing", module), strict=True) as ws:
        with pytest.raises(BundleLLMError, match=r"extractor crashing \(plugin crashing\) failed on session \S+: "
                                                 r"KeyError: 'oops' \(strict mode") as caught:
            ws.distill(knowledge_types=["crashing"])
        assert isinstance(caught.value.__cause__, KeyError)
    with Workspace(tmp_path / "lenient", ("crashing", module), strict=False) as ws:
        summary = ws.distill(knowledge_types=["crashing"])
        assert summary.kinds["crashing"].errors == 9  # counted, the run goes on


def test_the_kit_imports_neither_recbole_nor_torch():
    import subprocess

    code = ("import sys, recbole_bundlellm.testing; "
            "print(sorted(m for m in ('recbole', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_fake_teacher_serves_from_the_command_line_for_a_real_distill():
    import json as _json
    import subprocess
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "recbole_bundlellm.testing.teacher", "--answer", "Red."],
                            stdout=subprocess.PIPE, text=True)
    try:
        lines = list(iter(proc.stdout.readline, "\n"))  # the block ends with an empty line
        assert lines[0].strip() == "teacher:"
        block = {k.strip(): _json.loads(v) for k, v in (line.split(":", 1) for line in lines[1:] if line.strip())}
        request = urllib.request.Request(block["base_url"] + "/chat/completions", method="POST",
                                         data=_json.dumps({"model": block["model"], "messages": ASK}).encode(),
                                         headers={"Content-Type": "application/json"})
        reply = _json.loads(urllib.request.urlopen(request, timeout=10).read())
        assert reply["choices"][0]["message"]["content"] == "Red."
    finally:
        proc.terminate()
        proc.wait(timeout=10)
