"""The testing kit's builders: an adaptation context, a knowledge set and a sampler call, so a
plugin's tests import only ``recbole_bundlellm.testing``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import recbole_bundlellm.testing as kit

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    return kit.tiny_sessions(kit.prepare_tiny_data(tmp_path_factory.mktemp("tiny")))


def test_knowledge_set_takes_its_kinds_and_domains_from_the_items():
    kset = kit.knowledge_set([kit.knowledge_item("sizes", "Pairs are common.", support=4),
                              kit.knowledge_item("themes", "Shirt and tie.", domain="food")])
    assert kset.kinds == ["sizes", "themes"] and kset.domains == ["clothing", "food"]
    assert kset.counts() == {"sizes": 1, "themes": 1} and kset.items[0].support == 4


def test_adaptation_context_measures_prompts_and_keeps_the_budget(sessions):
    kset = kit.knowledge_set([kit.knowledge_item("sizes", "Pairs are common.")])
    context = kit.adaptation_context(sessions, kset, max_prompt_tokens=50)
    assert context.train_sessions == list(sessions) and context.knowledge is kset
    assert context.domain == kit.TINY_DOMAIN and context.max_prompt_tokens == 50
    from recbole_bundlellm.adaptation import Retrieved, StudentView

    bare, one = StudentView(), StudentView((Retrieved("sizes", "Pairs are common.", 1.0),))
    assert context.measure(sessions[0], one) > context.measure(sessions[0], bare) > 0


def test_sample_runs_a_sampler_with_the_checks_distill_makes(sessions):
    from recbole_bundlellm.sampling.sampler import Sampler

    class First(Sampler):
        name = "first"

        def select(self, context, size):
            return [s.session_id for s in context.sessions][:size]

    class Ints(First):
        name = "ints"

        def select(self, context, size):
            return [int(i) for i in super().select(context, size)]

    assert kit.sample(First(), sessions, ratio=0.5) == ["0", "2", "3", "4"]
    context = kit.sampling_context(sessions, seed=3, difficulty={"0": 1.0})
    assert context.sessions == list(sessions) and context.difficulty == {"0": 1.0}
    with pytest.raises(kit.BundleLLMError, match="sampler 'ints' returned session ids that are not strings"):
        kit.sample(Ints(), sessions)


def test_the_example_plugins_tests_import_only_the_kit():
    tests = REPO / "plugins" / "example_keywords" / "tests" / "test_example_keywords.py"
    imported = {node.module for node in ast.walk(ast.parse(tests.read_text())) if isinstance(node, ast.ImportFrom)}
    project = {m for m in imported if m and m.startswith("recbole_bundlellm")}
    assert project == {"recbole_bundlellm.testing"}, project
