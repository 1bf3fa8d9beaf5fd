"""TeacherLLM: the teacher as a bundle generator, over HTTP against a FakeTeacherServer on
127.0.0.1 (the real openai client, the real store): answers parsed and scored, a re-run served
from the store, failed calls and garbage answers counted as failed sessions."""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.generation.prompt import SYSTEM, TASK
from recbole_bundlellm.commands.runner import run
from recbole_bundlellm.testing import Answer, FakeTeacherServer
from recbole_bundlellm.teacher.errors import TeacherError, TeacherUnavailable

MODELS = Path(__file__).resolve().parents[1] / "recbole_bundlellm" / "models" / "students"
GARBAGE = "I am not sure which of these go together."


def _products(messages: list[dict[str, str]]) -> dict[str, str]:
    """The products dict of the last user turn of an AICL prompt."""
    text = messages[-1]["content"]
    return ast.literal_eval(text[text.index("{"):text.index("}") + 1])


def shirt_and_tie(messages: list[dict[str, str]]) -> Any:
    """A teacher that bundles the shirt with the tie, and rambles about watches (no answer)."""
    products = _products(messages)
    if any("Watch" in title for title in products.values()):
        return GARBAGE
    chosen = [name for name, title in products.items() if "Shirt" in title or "Tie" in title]
    return repr({"bundle1": chosen})


def _config(tiny_data: Path, store: Path, server: FakeTeacherServer, **extra: Any) -> dict[str, Any]:
    return {"data_path": str(tiny_data), "knowledge_dir": str(store), "teacher": server.config(), **extra}


def _predictions(out: Path) -> dict[str, dict[str, Any]]:
    return {r["session_id"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}


def _words(text: str) -> int:  # how FakeTeacherServer counts tokens
    return len(text.split())


def test_answers_are_parsed_scored_and_a_rerun_makes_no_call(tiny_data, tmp_path):
    store = tmp_path / "kn"
    with FakeTeacherServer(shirt_and_tie) as server:
        first = run("TeacherLLM", "clothing", config_dict=_config(tiny_data, store, server),
                    output_dir=tmp_path / "first")
        assert len(server.requests) == 2  # the two test sessions (1 and 8), one call each
        # The student's zero-shot AICL prompt, as is.
        messages = server.requests[0].messages
        assert [m["role"] for m in messages] == ["system", "user"]
        assert messages[0]["content"] == SYSTEM and messages[1]["content"].endswith(TASK)
        assert messages[1]["content"].startswith("Products in the session: {'product1': ")

        preds = _predictions(first.output_dir)
        assert sorted(map(sorted, preds["1"]["predicted_bundles"])) == [["102", "112"]]
        assert preds["8"]["predicted_bundles"] is None and preds["8"]["raw_text"] == GARBAGE
        assert preds["8"]["failure"] == "no JSON/dict found"  # unparsable: failed, never eval'ed
        assert first.test_result["failurerate"] == pytest.approx(0.5)
        assert first.test_result["exactf1"] == pytest.approx(0.5)  # session 1 exact, session 8 failed

        metrics = json.loads((first.output_dir / "metrics.json").read_text())
        teacher = metrics["info"]["teacher"]
        prompt_tokens = sum(_words(m["content"]) for r in server.requests for m in r.messages)
        completion_tokens = sum(_words(p["raw_text"]) for p in preds.values())
        assert teacher["usage"] == teacher["usage_made"] == {
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
        assert (teacher["calls"], teacher["calls_made"], teacher["calls_cached"]) == (2, 2, 0)
        assert (teacher["answered"], teacher["failed_calls"], teacher["unparsed_answers"]) == (2, 0, 1)
        assert teacher["model"] == server.model and "cost" not in teacher  # no prices set: tokens only
        assert not any(p["from_store"] for p in preds.values())

        # Again, on the same store: every answer from the store, not one request.
        again = run("TeacherLLM", "clothing", config_dict=_config(tiny_data, store, server),
                    output_dir=tmp_path / "again")
        assert len(server.requests) == 2
    assert again.test_result == first.test_result
    teacher_again = json.loads((again.output_dir / "metrics.json").read_text())["info"]["teacher"]
    assert (teacher_again["calls"], teacher_again["calls_made"], teacher_again["calls_cached"]) == (2, 0, 2)
    assert teacher_again["usage"] == teacher["usage"]  # the method's cost, as paid the first time
    assert teacher_again["usage_made"]["total_tokens"] == 0
    again_preds = _predictions(again.output_dir)
    assert all(p["from_store"] for p in again_preds.values())
    assert {k: p["predicted_bundles"] for k, p in again_preds.items()} == \
        {k: p["predicted_bundles"] for k, p in preds.items()}


def test_one_shot_and_prices(tiny_data, tmp_path):
    with FakeTeacherServer(shirt_and_tie) as server:
        teacher = server.config(price_input_per_1m=2.0, price_output_per_1m=8.0)
        result = run("TeacherLLM", "clothing", config_dict={**_config(tiny_data, tmp_path / "kn", server),
                                                            "prompt_mode": "one_shot", "teacher": teacher},
                     output_dir=tmp_path / "out")
        # A solved training session before the session: the student's one-shot prompt.
        assert [m["role"] for m in server.requests[0].messages] == ["system", "user", "assistant", "user"]
    info = result.info["teacher"]
    usage = info["usage"]
    assert info["cost"] == pytest.approx((usage["prompt_tokens"] * 2.0 + usage["completion_tokens"] * 8.0) / 1e6)
    assert info["cost_made"] == pytest.approx(info["cost"])
    assert all(p["example_sessions"] for p in _predictions(result.output_dir).values())


def test_a_failed_call_is_a_failed_session_and_a_rerun_asks_only_it(tiny_data, tmp_path):
    store = tmp_path / "kn"

    def watches_fail(messages: list[dict[str, str]]) -> Any:
        if any("Watch" in title for title in _products(messages).values()):
            return Answer.error(503, "overloaded")
        return shirt_and_tie(messages)

    with FakeTeacherServer(watches_fail) as server:
        first = run("TeacherLLM", "clothing", config_dict=_config(tiny_data, store, server),
                    output_dir=tmp_path / "first")
        assert len(server.requests) == 3  # session 1 once; session 8 twice (max_retries: 1)
    preds = _predictions(first.output_dir)
    assert preds["8"]["predicted_bundles"] is None and preds["8"]["raw_text"] is None
    assert preds["8"]["failure"].startswith("teacher call failed: ") and "503" in preds["8"]["failure"]
    assert preds["8"]["teacher_error"] == "TeacherUnavailable"
    assert preds["1"]["predicted_bundles"] is not None  # the run went on
    teacher = first.info["teacher"]
    assert (teacher["answered"], teacher["failed_calls"], teacher["errors"]) == (1, 1, {"http_503": 2})

    with FakeTeacherServer(shirt_and_tie) as healthy:
        again = run("TeacherLLM", "clothing", config_dict=_config(tiny_data, store, healthy),
                    output_dir=tmp_path / "again")
        assert len(healthy.requests) == 1  # only the failed session is asked again
        assert any("Watch" in t for t in _products(healthy.requests[0].messages).values())
    assert (again.info["teacher"]["calls_made"], again.info["teacher"]["calls_cached"]) == (1, 1)
    assert again.info["teacher"]["failed_calls"] == 0


def test_a_teacher_that_is_down_stops_the_run(tiny_data, tmp_path):
    with FakeTeacherServer([], default=Answer.error(500)) as server:
        config = _config(tiny_data, tmp_path / "kn", server, teacher_max_failures_in_a_row=1)
        with pytest.raises(TeacherUnavailable, match="failed 1 session in a row.*run the same command again"):
            run("TeacherLLM", "clothing", config_dict=config, output_dir=tmp_path / "out")
        assert len(server.requests) == 2  # one session, its first attempt and one retry: nothing more


def test_user_mistakes_are_one_clear_error(tiny_data, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    base = {"data_path": str(tiny_data), "knowledge_dir": str(tmp_path / "kn")}
    with pytest.raises(BundleLLMError, match="no teacher endpoint: set `teacher.base_url`"):
        run("TeacherLLM", "clothing", config_dict=base, output_dir=tmp_path / "a")
    with FakeTeacherServer(shirt_and_tie) as server:
        # adaptation is read by the students only: refused before the teacher's own check
        with pytest.raises(BundleLLMError, match=r"adaptation is not read by TeacherLLM \(it is read by BundleLLM"):
            run("TeacherLLM", "clothing", config_dict={**_config(tiny_data, tmp_path / "kn", server),
                                                       "adaptation": "icl"}, output_dir=tmp_path / "b")
        with pytest.raises(TeacherError, match="does not serve model 'nope'"):
            run("TeacherLLM", "clothing", config_dict={**base, "teacher": server.config(model="nope")},
                output_dir=tmp_path / "c")
        assert server.requests == []


def test_calls_run_concurrently_and_keep_their_order(tmp_path):
    from recbole_bundlellm.config import BundleConfig
    from recbole_bundlellm.models.students.teacher_llm import TeacherLLM

    sessions = [Session(str(i), (f"{i}a", f"{i}b", f"{i}c"), (f"Shirt {i}", f"Tie {i}", f"Belt {i}"))
                for i in range(6)]
    with FakeTeacherServer(shirt_and_tie, delay=0.4) as server:
        config = BundleConfig("TeacherLLM", "clothing", config_dict={
            "knowledge_dir": str(tmp_path / "kn"), "teacher": server.config(concurrency=6)})
        model = TeacherLLM(config, None)
        started = time.perf_counter()
        predictions = model.generate_bundles(sessions)
        elapsed = time.perf_counter() - started
    assert elapsed < 1.8, elapsed  # one at a time would take 6 x 0.4 s
    assert [p.session_id for p in predictions] == [s.session_id for s in sessions]
    assert [p.bundles for p in predictions] == [[(f"{i}a", f"{i}b")] for i in range(6)]


def test_the_prompt_defaults_are_the_students():
    student = yaml.safe_load((MODELS / "BundleLLM.yaml").read_text())
    teacher = yaml.safe_load((MODELS / "TeacherLLM.yaml").read_text())
    shared = {"prompt_mode", "prompt_format", "max_title_words", "show_categories", "answer_prefix"}
    assert shared <= set(teacher)
    assert {k: teacher[k] for k in shared} == {k: student[k] for k in shared}


def test_refused_credentials_stop_the_run_at_once(tiny_data, tmp_path):
    from recbole_bundlellm.teacher.errors import TeacherCredentialsRefused

    for status in (401, 403):
        with FakeTeacherServer([], default=Answer.error(status, "bad key")) as server:
            # No failure limit: before, every session was asked, failed and a table of zeros written.
            config = _config(tiny_data, tmp_path / f"kn{status}", server, teacher_max_failures_in_a_row=None)
            with pytest.raises(TeacherCredentialsRefused, match=f"refused the credentials \\(HTTP {status}\\)"):
                run("TeacherLLM", "clothing", config_dict={**config, "teacher": {**server.config(), "concurrency": 1}},
                    output_dir=tmp_path / f"out{status}")
            assert len(server.requests) == 1  # no retry, no other session asked
        assert not (tmp_path / f"out{status}").exists()  # no finished-looking run


def test_a_200_that_is_not_json_is_a_failed_session(tiny_data, tmp_path):
    def proxy_page_for_watches(messages: list[dict[str, str]]) -> Any:
        if any("Watch" in title for title in _products(messages).values()):
            return Answer.page()
        return shirt_and_tie(messages)

    with FakeTeacherServer(proxy_page_for_watches) as server:
        result = run("TeacherLLM", "clothing", config_dict=_config(tiny_data, tmp_path / "kn", server),
                     output_dir=tmp_path / "out")
    preds = _predictions(result.output_dir)
    assert preds["8"]["predicted_bundles"] is None and preds["8"]["failure"].startswith("teacher call failed: ")
    assert preds["1"]["predicted_bundles"] is not None  # the run went on
    assert result.info["teacher"]["failed_calls"] == 1
    assert "answered HTTP 200 with a body that is not JSON" in preds["8"]["failure"]
    assert result.info["teacher"]["errors"] == {"bad_response": 1}


def test_a_runaway_answer_is_cut_when_stored_and_counted(tiny_data, tmp_path):
    # Every answer is the bundle, then 5000 characters of rambling.
    with FakeTeacherServer(lambda m: shirt_and_tie(m) + " and" * 1250) as server:
        config = _config(tiny_data, tmp_path / "kn", server)
        result = run("TeacherLLM", "clothing", output_dir=tmp_path / "out",
                     config_dict={**config, "teacher": {**server.config(), "max_answer_chars": 300}})
    assert result.info["teacher"]["answers_truncated"] == 2
    preds = _predictions(result.output_dir)
    assert all(len(p["raw_text"]) <= 300 for p in preds.values())
