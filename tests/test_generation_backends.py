"""Generation backends: the contract and its registry (a third party's backend chosen by config
alone, a broken one warned about or refused), the models that keep the in-process backend, and the
``openai`` backend over HTTP: against a FakeTeacherServer (the prompt sent, stop strings, seeds,
rejected requests, a re-run answered from the cache) and end to end against the embedded llama.cpp
server serving the student's own GGUF."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from recbole_bundlellm.commands.runner import run
from recbole_bundlellm.config import BundleConfig
from recbole_bundlellm.config.keys import UnreadKeyError, keys_read_by
from recbole_bundlellm.extension.hookspecs import hookimpl
from recbole_bundlellm.extension.host import PluginError, PluginHost, PluginWarning
from recbole_bundlellm.generation.backend import GenerationBackend, GenerationConfig, GenerationContext, GenerationError
from recbole_bundlellm.generation.openai_backend import (UNKNOWN, OpenAIBackend, OpenAIBackendSettings, _matched_stop,
                                                         restore_stop)
from recbole_bundlellm.generation.prompt import SYSTEM, TASK
from recbole_bundlellm.settings import SettingsError
from recbole_bundlellm.testing import Answer, FakeTeacherServer

SHIRT_AND_TIE = "{'bundle1': ['product1', 'product2']"  # as an OpenAI server sends it: the stop "}" left out


def _predictions(out: Path) -> dict[str, dict[str, Any]]:
    return {r["session_id"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}


def _info(out: Path) -> dict[str, Any]:
    return json.loads((out / "metrics.json").read_text())["info"]


def _openai(server: FakeTeacherServer, **overrides: Any) -> dict[str, Any]:
    """The ``openai:`` block for ``server`` with test-sized retries."""
    return {"base_url": server.base_url, "model": server.model, "max_retries": 1, "backoff_base": 0.01,
            "backoff_max": 0.05, "timeout": 30.0, "concurrency": 2, **overrides}


# -- the contract and the registry ------------------------------------------------------------------
class FirstTwo(GenerationBackend):
    """A third party's backend: every session's first two products are a bundle."""

    name = "first_two"
    in_process = False

    def open(self, context: GenerationContext) -> None:
        self.context = context
        self._stats = {"prompts": 0}

    def generate(self, prompts, *, progress=None, desc="generating"):
        self._stats["prompts"] += len(prompts)
        return [["{'bundle1': ['product1', 'product2']}"] * self.context.generation.num_return_sequences
                for _ in prompts]


class _Plugin:
    def __init__(self, *classes: type) -> None:
        self.classes = classes

    @hookimpl
    def register_generation_backends(self, register):
        for cls in self.classes:
            register(cls)


def test_the_built_in_backends_and_who_reads_their_settings():
    with PluginHost.from_environment() as host:
        assert host.names("backend") == ["openai", "transformers"]
        freq, student, route = (host.models.resolve(m) for m in ("Freq", "BundleLLM", "RouteDK"))
        # A backend's block is read by the models that choose a backend, as strategy and router blocks are.
        assert "openai" in keys_read_by(student, host) and "openai" in keys_read_by(route, host)
        assert "openai" not in keys_read_by(freq, host)


def test_a_third_party_backend_is_used_by_config_alone(tiny_data, tmp_path):
    host = PluginHost.from_environment(plugins=[("first_two_backend", _Plugin(FirstTwo))])
    result = run("BundleLLM", "clothing", config_dict={"data_path": str(tiny_data), "generation_backend": "first_two",
                                                       "llm_model": "/no/weights/are/loaded"},
                 output_dir=tmp_path / "out", host=host)
    preds = _predictions(result.output_dir)
    assert preds and all(p["failure"] is None and len(p["predicted_bundles"]) == 1 for p in preds.values())
    info = _info(result.output_dir)
    assert info["generation_backend"] == {"name": "first_two"} and info["generation"] == {"prompts": len(preds)}
    assert "path" not in info  # no weights were loaded: the backend serves the student elsewhere


class _NotABackend:
    name = "nope"


def test_a_broken_backend_plugin_is_skipped_with_a_warning_and_refused_in_strict_mode():
    with pytest.warns(PluginWarning, match=r"register_generation_backends must register subclasses of "
                                           r"GenerationBackend"):
        host = PluginHost(entry_points=[], plugins=[("broken", _Plugin(_NotABackend))])
    assert host.names("backend") == [] and host.statuses[0].status == "failed"
    with pytest.raises(PluginError, match=r"plugin 'broken' failed: .*subclasses of GenerationBackend.*strict"):
        PluginHost(entry_points=[], plugins=[("broken", _Plugin(_NotABackend))], strict=True)

    class Returns:
        @hookimpl
        def register_generation_backends(self, register):
            return [FirstTwo]  # returned instead of registered

    with pytest.warns(PluginWarning, match="register_generation_backends returned"):
        PluginHost(entry_points=[], plugins=[("returns", Returns())])
    with pytest.raises(PluginError, match="register_generation_backends returned"):
        PluginHost(entry_points=[], plugins=[("returns", Returns())], strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a good one loads silently, also in strict mode
        assert PluginHost(entry_points=[], plugins=[("ok", _Plugin(FirstTwo))], strict=True).names("backend") == \
            ["first_two"]


def test_user_mistakes_are_one_line_naming_the_key(tiny_data, tmp_path):
    base = {"data_path": str(tiny_data)}
    openai = {"base_url": "http://127.0.0.1:9/v1", "model": "student"}

    def build(model: str, **extra: Any) -> None:
        config = BundleConfig(model, "clothing", config_dict={**base, **extra})
        config.spec.model_class(config, None)

    with pytest.raises(SettingsError, match=r"^generation_backend: unknown backend 'opnai'; did you mean 'openai'"):
        build("BundleLLM", generation_backend="opnai")
    with pytest.raises(SettingsError, match=r"^generation_backend must be a string; got 5$"):
        BundleConfig("BundleLLM", "clothing", config_dict={**base, "generation_backend": 5})
    with pytest.raises(SettingsError, match=r"^settings 'openai': base_url is required"):
        BundleConfig("BundleLLM", "clothing", config_dict={**base, "generation_backend": "openai",
                                                           "openai": {"model": "student"}})
    with pytest.raises(SettingsError, match=r"unknown setting 'openai.api_key'"):
        BundleConfig("BundleLLM", "clothing", config_dict={**base, "openai": {**openai, "api_key": "sk-1"}})
    with pytest.raises(SettingsError, match=r"^max_prompt_tokens counts the student's tokens in this process"):
        build("BundleLLM", generation_backend="openai", openai=openai, max_prompt_tokens=100)
    # The models that train the student or read its hidden states keep the transformers backend.
    for model, why in (("BundleSFT", "fine-tunes the student"), ("PairSFT", "reads the student's hidden states"),
                       ("RouteDK", "mixes its LoRA experts per input")):
        extra = {"prompt_format": "tags"} if model == "PairSFT" else {}
        with pytest.raises(SettingsError, match=rf"^generation_backend: openai serves the student from another "
                                            rf"process, but {model} {why}.*; use generation_backend: transformers$"):
            build(model, generation_backend="openai", openai=openai, **extra)
    # The backend's block is BundleLLM's (any value of generation_backend, as other component blocks),
    # and no other model's.
    BundleConfig("BundleLLM", "clothing", config_dict={**base, "openai": openai})
    with pytest.raises(UnreadKeyError, match=r"^openai is not read by Freq \(it is read by BundleLLM"):
        BundleConfig("Freq", "clothing", config_dict={**base, "openai": openai})
    with pytest.raises(UnreadKeyError, match=r"^generation_backend is not read by Freq"):
        BundleConfig("Freq", "clothing", config_dict={**base, "generation_backend": "openai"})


def test_restore_stop_puts_back_the_stop_string_a_server_strips():
    assert restore_stop(SHIRT_AND_TIE, "stop", ("}",)) == SHIRT_AND_TIE + "}"  # an open dict: stopped at "}"
    assert restore_stop("No bundle here.", "stop", ("}",)) == "No bundle here."  # ended by the model itself
    assert restore_stop(SHIRT_AND_TIE, "length", ("}",)) == SHIRT_AND_TIE  # cut off: nothing was stripped
    assert restore_stop("{'a': [1, 2]} and more", "stop", ("}",)) == "{'a': [1, 2]}"  # a server ignoring stop
    assert restore_stop("{'a': [1, 2]", "stop", ("}", "]]")) == "{'a': [1, 2]"  # which one? left as is
    assert restore_stop("text", "stop", ()) == "text"
    # vLLM and SGLang say which stop string it was (None: the model ended the answer).
    assert restore_stop("{'a': [1, 2]", "stop", ("}", "]]"), matched="}") == "{'a': [1, 2]}"
    assert restore_stop(SHIRT_AND_TIE, "stop", ("}",), matched=None) == SHIRT_AND_TIE
    from openai.types.chat.chat_completion import Choice

    def choice(**extra: Any) -> Choice:
        return Choice.model_validate({"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": "x"}, **extra})

    assert _matched_stop(choice(stop_reason="}")) == "}" and _matched_stop(choice(matched_stop=None)) is None
    assert _matched_stop(choice()) is UNKNOWN  # llama.cpp's server does not say


# -- the openai backend against a scripted server --------------------------------------------------
def test_openai_backend_sends_the_students_prompt_and_a_rerun_asks_nothing(tiny_data, tmp_path):
    with FakeTeacherServer(lambda messages: Answer(SHIRT_AND_TIE), model="student-lora") as server:
        config = {"data_path": str(tiny_data), "generation_backend": "openai", "openai": _openai(server),
                  "max_new_tokens": 40}
        first = run("BundleLLM", "clothing", config_dict=config, output_dir=tmp_path / "out")
        asked = len(server.requests)
        assert asked == len(_predictions(first.output_dir)) > 0  # one request per session
        request = server.requests[0]
        assert [m["role"] for m in request.messages] == ["system", "user"]
        assert request.messages[0]["content"] == SYSTEM and request.messages[1]["content"].endswith(TASK)
        assert (request.max_tokens, request.temperature) == (40, 0.0)
        assert request.extra["model"] == "student-lora" and request.extra["stop"] == ["}"]
        preds = _predictions(first.output_dir)
        assert all(p["raw_text"] == SHIRT_AND_TIE + "}" and p["failure"] is None for p in preds.values())
        info = _info(first.output_dir)
        assert info["generation"]["calls_made"] == asked and info["generation"]["calls_cached"] == 0
        assert info["generation_backend"]["model"] == "student-lora"
        assert Path(info["generation_backend"]["cache_dir"]) == (tmp_path / "out.answers").resolve()
        assert "exactf1" in first.test_result

        again = run("BundleLLM", "clothing", config_dict=config, output_dir=tmp_path / "out")
        assert len(server.requests) == asked  # every answer came from the cache beside the run
        assert _info(again.output_dir)["generation"]["calls_made"] == 0
        assert _info(again.output_dir)["generation"]["calls_cached"] == asked
        assert _predictions(again.output_dir) == preds


def test_a_run_stopped_by_a_server_that_is_down_resumes_asking_only_what_it_lacks(tiny_data, tmp_path):
    down = {"session": None}

    def script(messages):
        products = messages[-1]["content"]
        if down["session"] is None:
            down["session"] = products  # the first prompt asked is answered, the next one fails
        elif down["session"] != products and down["session"] != "up":
            return Answer.error(503, "overloaded")
        return Answer(SHIRT_AND_TIE)

    with FakeTeacherServer(script, model="student") as server:
        config = {"data_path": str(tiny_data), "generation_backend": "openai",
                  "openai": _openai(server, concurrency=1)}
        with pytest.raises(GenerationError, match=r"failed 2 attempts.*http_503.*answers received are kept in "
                                                  r".*out\.answers: run the same command again to resume"):
            run("BundleLLM", "clothing", config_dict=config, output_dir=tmp_path / "out")
        assert not (tmp_path / "out").exists()  # the failed run left no output folder
        before = len(server.requests)  # the answered prompt, then the failing one and its retry
        down["session"] = "up"
        again = run("BundleLLM", "clothing", config_dict=config, output_dir=tmp_path / "out")
        generation = _info(again.output_dir)["generation"]
        assert (generation["calls_made"], generation["calls_cached"]) == (1, 1)  # only the unanswered prompt
        assert len(server.requests) == before + 1


def test_openai_backend_samples_with_one_seed_per_answer_and_reports_rejections(tmp_path):
    def script(messages):
        if "bad" in messages[-1]["content"]:
            return Answer.error(400, "prompt too long")
        return Answer(SHIRT_AND_TIE)

    with FakeTeacherServer(script, model="student") as server:
        backend = OpenAIBackend(OpenAIBackendSettings(**_openai(server, cache_dir=str(tmp_path / "answers"))))
        backend.open(GenerationContext(GenerationConfig(do_sample=True, temperature=0.5, top_p=0.9, seed=7,
                                                        num_return_sequences=3, max_new_tokens=12,
                                                        stop_strings=("}",))))
        prompts = [[{"role": "user", "content": "good"}], [{"role": "user", "content": "bad"}]]
        answers = backend.generate(prompts)
        assert answers == [[SHIRT_AND_TIE + "}"] * 3, [""] * 3]  # a rejected prompt: empty answers
        good = [r for r in server.requests if r.messages[-1]["content"] == "good"]
        assert sorted(r.extra["seed"] for r in good) == [7, 8, 9]
        assert {(r.temperature, r.extra["top_p"]) for r in good} == {(0.5, 0.9)}
        assert backend.stats["failed_prompts"] == 1 and backend.stats["calls_made"] == 3
        with pytest.raises(GenerationError, match="rejected every prompt"):
            backend.generate(prompts[1:])
        backend.close()


def test_openai_backend_names_its_own_key_when_the_server_serves_another_model(tmp_path):
    with FakeTeacherServer([], model="base") as server:
        backend = OpenAIBackend(OpenAIBackendSettings(**_openai(server, model="my-lora",
                                                                cache_dir=str(tmp_path / "answers"))))
        backend.open(GenerationContext(GenerationConfig(max_new_tokens=8)))
        with pytest.raises(GenerationError, match=r"student server .* does not serve model 'my-lora'; it serves: base "
                                                  r"\(set openai.model to one of them\)"):
            backend.generate([[{"role": "user", "content": "hi"}]])
        assert server.requests == []


# -- end to end: the embedded llama.cpp server serving the student's own GGUF ---------------------
@pytest.mark.slow
def test_zero_shot_bundlellm_on_the_embedded_server_parses_scores_and_resumes(teacher_server, tiny_data, tmp_path):
    teacher_server.check()
    config = {"data_path": str(tiny_data), "generation_backend": "openai", "max_new_tokens": 48,
              "openai": {"base_url": teacher_server.base_url, "model": teacher_server.model, "concurrency": 1,
                         "max_retries": 2, "backoff_base": 0.01}}
    first = run("BundleLLM", "clothing", config_dict=config, output_dir=tmp_path / "zero_shot")
    preds = _predictions(first.output_dir)
    made = _info(first.output_dir)["generation"]["calls_made"]
    assert made == len(preds) > 0
    for p in preds.values():  # a real answer, read by the parser: bundles, or the parser's reason
        assert p["raw_text"] and (p["predicted_bundles"] is not None or p["failure"])
        assert not p["failure"] or p["failure"] != "empty answer"
    assert {"exactf1", "bestjaccard", "failurerate"} <= set(first.test_result)

    again = run("BundleLLM", "clothing", config_dict=config, output_dir=tmp_path / "zero_shot")
    generation = _info(again.output_dir)["generation"]
    assert (generation["calls_made"], generation["calls_cached"]) == (0, made)  # no HTTP call at all
    assert {k: v["raw_text"] for k, v in _predictions(again.output_dir).items()} == \
        {k: v["raw_text"] for k, v in preds.items()}
