"""Tests of the example plugin, written as a third party writes them: with the testing kit that
ships with recbole_bundlellm (``recbole_bundlellm.testing``) and nothing else of the project.
Copy this file next to your own plugin and change the names.

Run them with ``pytest plugins/example_keywords/tests`` (the plugin installed: ``pip install
./plugins/example_keywords``).
"""

from __future__ import annotations

from pathlib import Path

import bundlellm_keywords
import pytest
from bundlellm_keywords import KeywordsExtractor, KeywordsSettings

from recbole_bundlellm.testing import BundleLLMError, Workspace, as_record, plugin_host, prepare_tiny_data


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The tiny dataset, prepared once for the module."""
    return prepare_tiny_data(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def ws(tmp_path, data):
    """A workspace: the tiny data, a store, and a strict host of this plugin and the built-ins."""
    with Workspace(tmp_path, bundlellm_keywords, data_path=data) as workspace:
        yield workspace


def test_the_plugin_loads_alone_and_beside_the_builtins():
    with plugin_host(bundlellm_keywords, builtins=False) as host:
        (status,) = host.statuses
        assert (status.name, status.status, status.components) == ("keywords", "loaded", ["extractor:keywords"])
        assert host.names("extractor") == ["keywords"]
    with plugin_host(bundlellm_keywords) as host:
        assert {"keywords", "patterns", "rules", "thoughts"} <= set(host.names("extractor"))


def test_settings_are_read_from_one_yaml_key_and_checked():
    with plugin_host(bundlellm_keywords, builtins=False) as host:
        extractor = host.create("extractor", "keywords", {"keywords": {"top_k": 3}})
        assert extractor.settings == KeywordsSettings(top_k=3)
        with pytest.raises(BundleLLMError, match=r"keywords.top_k must be an integer >= 1; got 0"):
            host.create("extractor", "keywords", {"keywords": {"top_k": 0}})
        with pytest.raises(BundleLLMError, match="unknown setting 'keywords.top'; did you mean 'top_k'"):
            host.create("extractor", "keywords", {"keywords": {"top": 3}})


def test_extract_session_pairs_words_of_two_products_of_a_bundle(ws):
    session = ws.sessions()[0]  # "Oxford Cotton Dress Shirt, White" + "Silk Necktie Solid Navy"
    extraction = KeywordsExtractor().extract_session(session, None)  # needs no teacher
    assert extraction.status == "ok"
    pairs = {tuple(p) for p in extraction.content["pairs"]}
    assert ("cotton", "silk") in pairs and ("necktie", "shirt") in pairs
    assert not any(a in {"cotton", "oxford", "dress", "shirt"} and b in {"cotton", "oxford", "dress", "shirt"}
                   for a, b in pairs)  # never two words of one product


def test_aggregate_keeps_the_pairs_most_sessions_share(ws):
    extractor = KeywordsExtractor(KeywordsSettings(top_k=2, min_sessions=2))
    records = [as_record("keywords", s, extractor.extract_session(s, None)) for s in ws.sessions()]
    items = extractor.aggregate(records, "clothing")
    assert len(items) == 2 and [i.support for i in items] == sorted((i.support for i in items), reverse=True)
    assert all(i.kind == "keywords" and i.domain == "clothing" and i.support >= 2 for i in items)
    assert items[0].text.startswith("Bundles often combine a product mentioning")


def test_distill_stores_one_record_per_training_session_and_resumes(ws):
    summary = ws.distill(knowledge_types=["keywords"], keywords={"min_sessions": 1},
                         sampling={"sampler": "random", "ratio": 0.5, "seed": 1})
    kind = summary.kinds["keywords"]
    assert (kind.records, kind.new, kind.errors) == (9, 9, 0)
    assert summary.knowledge_set_counts["keywords"] > 0
    assert all(r.provenance["plugin"] == "keywords" for r in ws.records("keywords"))
    again = ws.distill(knowledge_types=["keywords"], keywords={"min_sessions": 1})
    assert again.kinds["keywords"].new == 0  # stored sessions are never extracted again


def test_a_run_beside_the_plugin_is_unchanged(ws):
    result = ws.run("Freq")
    assert 0 < result.test_result["exactf1"] <= 1
