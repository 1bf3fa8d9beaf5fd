"""Structured outputs: an extractor's declared JSON schema goes out as ``response_format``, is part
of the call key, and an endpoint that refuses it is asked again in another form or in free text
(remembered, counted). All against the kit's fake teacher over real HTTP (the real client)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest

from recbole_bundlellm.commands.cli import main
from recbole_bundlellm.commands.distill import distill
from recbole_bundlellm.knowledge.extractor import Extraction, KnowledgeExtractor, extractor_fingerprint
from recbole_bundlellm.knowledge.store import KnowledgeStore
from recbole_bundlellm.teacher.calls import ResponseSchema, call_key, stable_hash
from recbole_bundlellm.teacher.client import TeacherClient
from recbole_bundlellm.teacher.errors import TeacherStructuredOutputsRefused
from recbole_bundlellm.teacher.settings import TeacherSettings
from recbole_bundlellm.testing import FakeTeacherServer, ScriptedTeacher, tiny_sessions

from teacher_fixtures import extractor_answer as answer

ASK = [{"role": "user", "content": "Name two colours."}]
COLOURS = ResponseSchema("colours", {"type": "object", "properties": {"colours": {"type": "array",
                                                                                  "items": {"type": "string"}}},
                                     "required": ["colours"], "additionalProperties": False})


def client_for(server: FakeTeacherServer, store: KnowledgeStore, **overrides: Any) -> TeacherClient:
    return TeacherClient(TeacherSettings(**server.config(**overrides)), store)



def tiny_config(tiny_data, store, server, **teacher: Any) -> dict[str, Any]:
    return {"dataset": "clothing", "data_path": str(tiny_data), "knowledge_dir": str(store),
            "knowledge_types": ["rules", "thoughts"], "distill_max_sessions": 3,
            "teacher": server.config(**teacher)}


# -- the request -----------------------------------------------------------------------------------
def test_the_rules_answers_go_out_with_their_schema_and_the_rest_in_free_text(tiny_data, tmp_path):
    with FakeTeacherServer(answer) as server:
        summary = distill([], tiny_config(tiny_data, tmp_path / "kn", server), progress=False)
    assert summary.kinds["rules"].ok == 3 and summary.teacher["structured_calls"] > 0
    formats = [r.extra.get("response_format") for r in server.requests]
    asked_bundles = [r for r in server.requests if "general rules" not in r.messages[-1]["content"]
                     and "Explain step by step" not in r.messages[-1]["content"]]
    assert asked_bundles and all(r.extra["response_format"]["type"] == "json_schema" for r in asked_bundles)
    schema = asked_bundles[0].extra["response_format"]["json_schema"]
    assert schema["name"] == "rules_answer" and schema["strict"] is True
    n_items = len(json.loads(json.dumps(schema))["schema"]["properties"]["bundles"]["items"]["items"]["enum"])
    assert n_items >= 2  # the session's own products, product1..productN
    # The rules list and the thoughts are prose: asked without a response_format.
    assert formats.count(None) == len(server.requests) - len(asked_bundles) > 0
    # The answers are read by the parser as before: the first answer's bundle is in the record.
    record = KnowledgeStore(tmp_path / "kn").records("rules")[0]
    assert record.content["initial_bundles"] == [[0, 1]] and record.provenance["calls_structured"] >= 1
    # The schema is part of the stored call's key parameters.
    calls = KnowledgeStore(tmp_path / "kn").calls()
    assert sum("response_format" in c.request["params"] for c in calls) == len(asked_bundles)


def test_the_schema_is_part_of_the_call_key(tmp_path):
    store = KnowledgeStore(tmp_path / "kn")
    with FakeTeacherServer(['{"colours": ["red", "blue"]}', "Red and blue."]) as server, store.writer():
        structured, cached = client_for(server, store).complete(ASK, schema=COLOURS)
        assert not cached and server.requests[0].extra["response_format"] == COLOURS.response_format()
        plain, cached = client_for(server, store, structured_outputs="off").complete(ASK, schema=COLOURS)
        assert not cached and "response_format" not in server.requests[1].extra
        assert plain.key != structured.key and plain.text == "Red and blue."
        # Off, the key is the one a call without any schema always had (stores made before are hit).
        params = {"temperature": 0.0, "seed": 0, "max_tokens": 256}
        assert plain.key == call_key(server.model, ASK, params)
        again, cached = client_for(server, store).complete(ASK, schema=COLOURS)
        assert cached and again.text == structured.text and len(server.requests) == 2


# -- refusals --------------------------------------------------------------------------------------
def test_an_endpoint_without_structured_outputs_is_asked_in_free_text_and_that_is_remembered(tmp_path):
    store = KnowledgeStore(tmp_path / "kn")
    with FakeTeacherServer(["Red and blue.", "Green."], response_formats=()) as server, store.writer():
        client = client_for(server, store)
        first, _ = client.complete(ASK, schema=COLOURS)
        # Refused in both forms (json_schema, json_object), then asked without: one answer used.
        assert [r.extra["response_format"]["type"] for r in server.refused] == ["json_schema", "json_object"]
        assert first.text == "Red and blue." and "response_format" not in first.request["params"]
        second, _ = client.complete([{"role": "user", "content": "One more colour."}], schema=COLOURS)
        assert second.text == "Green." and len(server.refused) == 2  # remembered: not offered again
        assert [r.extra.get("response_format") for r in server.requests] == [None, None]
        stats = client.stats.to_json()
        assert (stats["structured_refusals"], stats["structured_format"], stats["calls_made"]) == (2, "text", 2)
        assert stats["errors"] == {} and stats["retries"] == 0


def test_llama_cpp_pythons_server_is_asked_in_its_own_form_without_retries(tmp_path):
    """llama-cpp-python's server answers ``json_schema`` with HTTP 500 (a validation error) and
    honours ``{"type": "json_object", "schema": ...}``: no retry of the 500, one refusal, and the
    answer is keyed as the structured call it is."""
    store = KnowledgeStore(tmp_path / "kn")
    with FakeTeacherServer(['{"colours": ["red"]}'], response_formats=("json_object", "text"),
                           refusal_status=500) as server, store.writer():
        client = client_for(server, store, max_retries=3)
        record, _ = client.complete(ASK, schema=COLOURS)
    sent = server.requests[0].extra["response_format"]
    assert sent == {"type": "json_object", "schema": COLOURS.schema}
    assert record.request["params"]["response_format"] == COLOURS.response_format()
    assert record.request["response_format_sent"] == sent
    assert (client.stats.retries, client.stats.structured_refusals, client.stats.structured_format) == \
        (0, 1, "json_object")


def test_structured_outputs_on_stops_at_a_refusal(tiny_data, tmp_path, capsys):
    store = KnowledgeStore(tmp_path / "kn")
    with FakeTeacherServer(["unused"], response_formats=()) as server:
        with store.writer(), pytest.raises(TeacherStructuredOutputsRefused, match="structured_outputs: auto"):
            client_for(server, store, structured_outputs="on").complete(ASK, schema=COLOURS)
        assert server.requests == []  # nothing answered in free text
        config = tiny_config(tiny_data, tmp_path / "kn2", server, structured_outputs="on")
        overrides = [f"--{k}={json.dumps(v)}" for k, v in config.items()]
        assert main(["distill", "--no-progress", *overrides]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "refuses structured outputs" in err[-1] and len(err[-1]) < 400


# -- the contract ----------------------------------------------------------------------------------
def test_fingerprints_change_only_for_extractors_with_a_schema():
    from bundlellm_builtin.knowledge.rules import RulesExtractor
    from bundlellm_builtin.knowledge.thoughts import ThoughtsExtractor
    from recbole_bundlellm.settings import settings_dict

    auto, off = TeacherSettings().identity(), TeacherSettings(structured_outputs="off").identity()
    on = TeacherSettings(structured_outputs="on").identity()
    rules, thoughts = RulesExtractor(), ThoughtsExtractor()
    assert extractor_fingerprint(rules, auto) == extractor_fingerprint(rules, on) != extractor_fingerprint(rules, off)
    assert extractor_fingerprint(thoughts, auto) == extractor_fingerprint(thoughts, off)
    # Off is the fingerprint of stores made before structured outputs existed.
    legacy = {k: v for k, v in off.items() if k != "structured_outputs"}
    assert extractor_fingerprint(rules, off) == stable_hash({"extractor": "rules", "version": rules.version,
                                                             "settings": settings_dict(rules.settings),
                                                             "teacher": legacy}, 16)


class Themes(KnowledgeExtractor):
    """A plugin's extractor with a JSON answer: it declares the schema, asks with it, parses the text."""

    name = "themes"
    needs_teacher = True
    response_schemas: ClassVar[dict[str, Any]] = {"theme": {
        "type": "object", "properties": {"theme": {"type": "string"}}, "required": ["theme"],
        "additionalProperties": False}}

    def extract_session(self, session, teacher):
        text = teacher.chat([{"role": "user", "content": "; ".join(session.titles)}], max_tokens=16,
                            schema=self.response_schema("theme", session))
        try:  # JSON from a structured endpoint; plain text from one without (never eval)
            theme = json.loads(text)["theme"]
        except (ValueError, KeyError, TypeError):
            theme = text.strip()
        return Extraction("ok", {"theme": theme}, theme)

    def aggregate(self, records, domain):
        return []


def test_a_plugin_extractor_declares_its_schema(tiny_data):
    session = tiny_sessions(tiny_data)[0]
    teacher = ScriptedTeacher(['{"theme": "formal wear"}'])
    assert Themes().extract_session(session, teacher).content == {"theme": "formal wear"}
    sent = teacher.calls[0].extra["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "themes_theme"
    assert sent["json_schema"]["schema"] == Themes.response_schemas["theme"]
    assert Themes().response_schema("other", session) is None
    with pytest.raises(ValueError, match="name"):
        ResponseSchema("two words", {"type": "object"})
