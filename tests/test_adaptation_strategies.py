"""The built-in adaptation strategies (icl, sft, icl_sft), retrieval and the student's knowledge set.

Hand-made sessions and knowledge sets, a fake prompt measure (words), no LLM.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path

import bundlellm_builtin.adaptation as adaptation_plugin
import bundlellm_builtin.knowledge.patterns as patterns_plugin
import bundlellm_builtin.knowledge.thoughts as thoughts_plugin
import bundlellm_builtin.sampling.samplers as samplers_plugin
import numpy as np
import pytest
from bundlellm_builtin.adaptation import (
    IclSettings,
    IclSftStrategy,
    IclStrategy,
    SftSettings,
    SftStrategy,
)
from bundlellm_builtin.knowledge.patterns import PatternsExtractor
from bundlellm_builtin.knowledge.thoughts import ThoughtsExtractor

from recbole_bundlellm.adaptation import EXAMPLE, AdaptationContext, StudentView
from recbole_bundlellm.adaptation.knowledge_source import (
    AmbiguousTeacher,
    KnowledgeDomainMismatch,
    KnowledgeNotDistilled,
    KnowledgeStoreMissing,
    load_student_knowledge,
)
from recbole_bundlellm.adaptation.retrieval import SessionRetriever, matching_categories, top_general
from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.generation.examples import NearestSessions
from recbole_bundlellm.knowledge.extractor import extractor_fingerprint
from recbole_bundlellm.knowledge.records import KnowledgeItem, KnowledgeRecord
from recbole_bundlellm.knowledge.store import KnowledgeStore
from recbole_bundlellm.extension.host import PluginHost
from recbole_bundlellm.sampling.knowledge_set import KnowledgeSet
from recbole_bundlellm.settings import SettingsError
from recbole_bundlellm.teacher.settings import TeacherSettings

REPO = Path(__file__).resolve().parents[1]


# -- helpers ------------------------------------------------------------------------------------
def session(sid: str, titles: Sequence[str], cats: Sequence[str], bundles: Sequence[Sequence[int]] = ((0, 1),),
            intents: Sequence[str] = ()) -> Session:
    items = tuple(f"{sid}-{i}" for i in range(len(titles)))
    return Session(sid, items, tuple(titles), tuple(cats), tuple(frozenset(items[i] for i in b) for b in bundles),
                   tuple(intents))


CAMERA = session("1", ["Canon camera body", "Canon zoom lens", "Camera bag"], ["Cameras", "Lenses", "Bags"])
LAPTOP = session("2", ["Dell laptop", "Laptop sleeve", "USB mouse"], ["Laptops", "Sleeves", "Mice"])
GARDEN = session("3", ["Garden hose", "Hose nozzle", "Garden gloves"], ["Hoses", "Nozzles", "Gloves"])
CAMERA2 = session("4", ["Canon camera strap", "Canon lens cap", "Tripod"], ["Straps", "Lenses", "Tripods"])
TRAIN = [CAMERA, LAPTOP, GARDEN, CAMERA2]
QUERY = Session("9", ("q-0", "q-1", "q-2"), ("Canon camera battery", "Canon zoom lens hood", "Memory card"),
                ("Cameras", "Lenses", "Cards"))


#: The scope and heading the built-in extractors give their items.
BUILTIN_SCOPES = {"patterns": ("categories", "Frequent patterns"), "rules": ("domain", "Rules"),
                  "thoughts": ("session", "Reasoning")}


def item(kind: str, text: str, *, domain: str = "electronic", support: float | None = None,
         session_id: str | None = None, **data) -> KnowledgeItem:
    scope, heading = BUILTIN_SCOPES.get(kind, ("domain", ""))
    return KnowledgeItem(kind, domain, text, session_id, support, dict(data), scope, heading)


def pattern(cats: Sequence[str], support: float, domain: str = "electronic") -> KnowledgeItem:
    return item("patterns", f"Products of {' and '.join(cats)} go together.", domain=domain, support=support,
                categories=sorted(cats))


def rule(text: str, support: float, domain: str = "electronic") -> KnowledgeItem:
    return item("rules", text, domain=domain, support=support)


def thought(sid: str, reasoning: str, domain: str = "electronic") -> KnowledgeItem:
    return item("thoughts", f"{reasoning}\nAnswer: {{...}}", domain=domain, session_id=sid, reasoning=reasoning,
                answer="{...}")


def full_set() -> KnowledgeSet:
    items = [
        pattern(["Cameras", "Lenses"], 0.10),
        pattern(["Lenses", "Cards"], 0.05),
        pattern(["Hoses", "Nozzles"], 0.20),  # not in QUERY
        rule("Accessories of one device form a bundle.", 3),
        rule("Items of one brand often go together.", 1),
        thought("1", "The camera and its lens serve one photographer intent."),
        thought("3", "The hose and the nozzle are for watering the garden."),
    ]
    return KnowledgeSet(items, ["patterns", "rules", "thoughts"], ["electronic"])


def words(session: Session, view: StudentView) -> int:
    """A fake prompt measure: 10 tokens of frame, the session's titles, and every item's words."""
    return (10 + sum(len(t.split()) for t in session.titles) + sum(len(r.text.split()) for r in view.items)
            + len((view.reasoning or "").split()))


def prepared(strategy, knowledge=None, **context):
    strategy.prepare(AdaptationContext(TRAIN, knowledge, **context))
    return strategy


# -- retrieval ----------------------------------------------------------------------------------
def test_retriever_finds_the_most_similar_and_never_the_session_itself():
    retriever = SessionRetriever(TRAIN)
    (best, second), = retriever.retrieve([QUERY], k=2)
    assert {best.session.session_id, second.session.session_id} == {"1", "4"} and best.score >= second.score > 0
    for own, neighbours in zip(TRAIN, retriever.retrieve(TRAIN, k=3)):
        assert len(neighbours) == 3 and own.session_id not in {n.session.session_id for n in neighbours}
    assert NearestSessions is SessionRetriever  # the prompt modes' name for it
    assert retriever.nearest([CAMERA])[0][0].session_id == "4"


def test_retriever_by_embeddings_uses_cosine_and_never_the_session_itself():
    vocabulary = sorted({w.lower() for s in [*TRAIN, QUERY] for t in s.titles for w in t.split()})

    def embed(texts):  # bags of words: cosine as TF-IDF without the weights
        return np.array([[t.lower().split().count(w) for w in vocabulary] for t in texts], dtype=float)

    retriever = SessionRetriever(TRAIN, embed=embed)
    assert retriever.nearest([QUERY], k=1)[0][0].session_id in {"1", "4"}
    assert all(n.session_id != s.session_id for s, row in zip(TRAIN, retriever.nearest(TRAIN, k=3)) for n in row)
    with pytest.raises(ValueError, match="shape"):
        SessionRetriever(TRAIN, embed=lambda texts: np.ones(len(texts)))


def test_patterns_match_when_all_categories_are_in_the_session_and_rules_rank_per_domain():
    kset = full_set()
    found = matching_categories(QUERY, kset.of_kind("patterns"), max_items=5)
    assert [r.text for r in found] == [kset.items[0].text, kset.items[1].text]  # best supported first
    assert [round(r.score, 2) for r in found] == [0.5, 0.25]  # relative to the domain's best (0.20)
    assert len(matching_categories(QUERY, kset.of_kind("patterns"), max_items=1)) == 1
    rules = [rule("a", 4, "electronic"), rule("b", 2, "electronic"), rule("c", 1, "electronic"),
             rule("x", 10, "clothing"), rule("y", 5, "clothing")]
    top = top_general(rules, 2)
    assert [(r.text, r.domain, r.score) for r in top] == [
        ("a", "electronic", 1.0), ("b", "electronic", 0.5), ("x", "clothing", 1.0), ("y", "clothing", 0.5)]


# -- icl ----------------------------------------------------------------------------------------
def test_every_knowledge_type_reaches_the_icl_view():
    strategy = prepared(IclStrategy(IclSettings(examples=2)), full_set())
    (view,) = strategy.views([QUERY], training=False)
    assert [s.session_id for s in view.examples] == ["1", "4"]
    assert len(view.knowledge("patterns")) == 2 and len(view.knowledge("rules")) == 2
    assert view.thought_of(CAMERA) == "The camera and its lens serve one photographer intent."
    assert view.thought_of(CAMERA2) is None  # no thought of that session in the set
    assert not view.knowledge("thoughts")  # thoughts come only with their examples
    assert view.reasoning is None and not IclStrategy.fine_tunes
    # An example's thought always scores below the example: it leaves first.
    example = next(r for r in view.items if r.kind == EXAMPLE and r.session is CAMERA)
    own = next(r for r in view.items if r.kind == "thoughts")
    assert own.session is CAMERA and own.score < example.score == 1.0


def test_kinds_not_in_the_set_never_appear():
    only_rules = KnowledgeSet(full_set().items, ["rules"], ["electronic"])  # other kinds' items are ignored
    (view,) = prepared(IclStrategy(IclSettings(examples=1)), only_rules).views([QUERY], training=False)
    assert {r.kind for r in view.items} == {EXAMPLE, "rules"}
    (raw,) = prepared(IclStrategy(IclSettings(examples=1))).views([QUERY], training=False)
    assert [r.kind for r in raw.items] == [EXAMPLE]  # no knowledge set: plain retrieved examples


def test_icl_training_views_never_show_the_session_itself_nor_its_thought():
    for strategy in (IclStrategy(IclSettings(examples=3)), IclSftStrategy(IclSettings(examples=3))):
        views = prepared(strategy, full_set()).views(TRAIN, training=True)
        for own, view in zip(TRAIN, views):
            shown = {r.session.session_id for r in view.items if r.session is not None}
            assert len(view.examples) == 3 and own.session_id not in shown
            assert view.reasoning is None
    assert IclSftStrategy.fine_tunes and IclSftStrategy.name == "icl_sft"


def test_icl_sft_shows_the_icl_view_at_training_and_inference():
    icl = prepared(IclStrategy(IclSettings(examples=2)), full_set())
    both = prepared(IclSftStrategy(IclSettings(examples=2)), full_set())
    shown = icl.views([QUERY], training=False)
    assert both.views([QUERY], training=True) == shown == both.views([QUERY], training=False)


def test_the_budget_drops_the_lowest_scores_first_and_keeps_the_prompt_within_the_limit():
    kset = full_set()
    unlimited = prepared(IclStrategy(IclSettings(examples=3)), kset)
    (full,) = unlimited.views([QUERY], training=False)
    limit = words(QUERY, full) - 12
    strategy = prepared(IclStrategy(IclSettings(examples=3)), kset, measure=words, max_prompt_tokens=limit)
    (view,) = strategy.views([QUERY], training=False)
    assert words(QUERY, view) <= limit < words(QUERY, full)
    kept = set(view.items)
    dropped = [r for r in full.items if r not in kept]
    assert dropped and min(r.score for r in kept) >= max(r.score for r in dropped)
    assert strategy.stats["eval_trimmed_items"] == len(dropped) and strategy.stats["eval_views"] == 1
    # Items keep their order; the best example stays longest.
    assert [r for r in full.items if r in kept] == list(view.items)
    (tiny,) = prepared(IclStrategy(IclSettings(examples=3)), kset, measure=words,
                       max_prompt_tokens=1).views([QUERY], training=False)
    assert tiny.is_raw and strategy.stats["eval_raw"] == 0  # the session itself is never cut


def test_embedding_retrieval_needs_the_students_embeddings():
    with pytest.raises(SettingsError, match="embedding"):
        prepared(IclStrategy(IclSettings(retrieval="embedding")), full_set())
    strategy = prepared(IclStrategy(IclSettings(examples=1, retrieval="embedding")), full_set(),
                        embed=lambda texts: np.array([[len(t), 1.0] for t in texts]))
    (view,) = strategy.views([QUERY], training=False)
    assert len(view.examples) == 1


# -- sft ----------------------------------------------------------------------------------------
def test_sft_sets_the_sessions_own_thought_as_reasoning_at_training_only():
    strategy = prepared(SftStrategy(SftSettings()), full_set())
    camera, laptop = strategy.views([CAMERA, LAPTOP], training=True)
    assert camera.reasoning == "The camera and its lens serve one photographer intent."
    assert laptop.reasoning is None  # its thought was not sampled: the raw target
    assert not camera.examples and not camera.knowledge("thoughts")
    assert [r.text for r in camera.knowledge("patterns")] == [full_set().items[0].text]
    assert len(camera.knowledge("rules")) == 2
    (inference,) = strategy.views([CAMERA], training=False)
    assert inference.reasoning is None and inference.items == camera.items
    assert SftStrategy.fine_tunes
    assert strategy.stats == {"train_views": 2, "train_raw": 0, "train_trimmed_items": 0, "train_reasoning": 1,
                              "eval_views": 1, "eval_raw": 0, "eval_trimmed_items": 0, "eval_reasoning": 0}


def test_raw_views_are_counted():
    strategy = prepared(SftStrategy(SftSettings()))
    views = strategy.views(TRAIN, training=True)
    assert all(v.is_raw for v in views) and strategy.stats["train_raw"] == len(TRAIN)
    patterns_only = KnowledgeSet([pattern(["Cameras", "Lenses"], 0.1)], ["patterns"], ["electronic"])
    strategy = prepared(SftStrategy(SftSettings()), patterns_only)
    views = strategy.views(TRAIN, training=True)
    assert [v.is_raw for v in views] == [False, True, True, True]
    assert strategy.stats["train_raw"] == 3 and strategy.stats["train_views"] == 4
    strategy.prepare(AdaptationContext(TRAIN, patterns_only))
    assert strategy.stats == {}  # counts start again with each prepare


def test_multi_domain_sets_keep_each_items_domain_and_match_thoughts_in_the_runs_domain():
    items = [rule("E rule one is here.", 2, "electronic"), rule("C rule one is here.", 5, "clothing"),
             thought("1", "Electronic reasoning about the camera."),
             thought("1", "Clothing reasoning of another session 1.", domain="clothing")]
    kset = KnowledgeSet(items, ["rules", "thoughts"], ["electronic", "clothing"])
    with pytest.raises(ValueError, match="domain"):
        prepared(SftStrategy(SftSettings()), kset)
    strategy = prepared(SftStrategy(SftSettings()), kset, domain="electronic")
    (view,) = strategy.views([CAMERA], training=True)
    assert view.reasoning == "Electronic reasoning about the camera."
    assert {(r.text, r.domain) for r in view.knowledge("rules")} == {
        ("E rule one is here.", "electronic"), ("C rule one is here.", "clothing")}


# -- registration -------------------------------------------------------------------------------
def test_the_strategies_register_through_the_adaptation_entry_point():
    host = PluginHost(entry_points=[], plugins=[("adaptation", adaptation_plugin)])
    assert host.names("strategy") == ["icl", "icl_sft", "sft"]
    strategy = host.create("strategy", "icl", {"icl": {"examples": 1, "top_rules": 2}})
    assert strategy.settings == IclSettings(examples=1, top_rules=2)
    with pytest.raises(SettingsError, match="examples"):
        host.create("strategy", "sft", {"sft": {"examples": 1}})
    entry_points = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    assert entry_points["recbole_bundlellm"]["adaptation"] == "bundlellm_builtin.adaptation"


# -- the student's knowledge set ----------------------------------------------------------------
class FakeConfig(dict):
    """What load_student_knowledge reads: item access and a plugin host."""

    def __init__(self, values, host):
        super().__init__(values)
        self.host = host


@pytest.fixture(scope="module")
def host():
    return PluginHost(entry_points=[], plugins=[("patterns", patterns_plugin), ("thoughts", thoughts_plugin),
                                                ("samplers", samplers_plugin)])


def electronic_sessions(n: int = 10) -> list[Session]:
    pairs = [("Cameras", "Lenses"), ("Laptops", "Mice"), ("Hoses", "Nozzles")]
    return [session(str(i), [f"title {i} a", f"title {i} b", f"title {i} c"], [*pairs[i % 3], "Other"])
            for i in range(n)]


def write_store(root: Path, sessions: Sequence[Session], domain: str = "electronic", *,
                thoughts_teachers: Sequence[str] = ()) -> None:
    """Patterns records (no teacher) and, per teacher model named, thought records."""
    store = KnowledgeStore(root, fsync=False)
    patterns = PatternsExtractor()
    with store.writer():
        for s in sessions:
            e = patterns.extract_session(s)
            store.put_record(KnowledgeRecord("patterns", domain, s.session_id, extractor_fingerprint(patterns, None),
                                             e.status, e.content, e.text, e.reason, s.session_id))
            for model in thoughts_teachers:
                fp = extractor_fingerprint(ThoughtsExtractor(), TeacherSettings(model=model).identity())
                store.put_record(KnowledgeRecord("thoughts", domain, s.session_id, fp, "ok",
                                                 {"reasoning": f"why {s.session_id}", "answer": "{}"},
                                                 f"why {s.session_id}", None, s.session_id,
                                                 {"teacher_model": model}))


def config(host, root: Path, **values) -> FakeConfig:
    return FakeConfig({"dataset": "electronic", "knowledge_dir": str(root), "knowledge_use": ["patterns"],
                       "sampling": None, "teacher": None, "distill_max_sessions": None,
                       **values}, host)


def test_no_knowledge_use_is_the_raw_data_and_needs_no_store(host, tmp_path):
    assert load_student_knowledge(config(host, tmp_path / "nowhere", knowledge_use=[])) is None


def test_sampling_none_takes_every_ok_record_of_the_store(host, tmp_path):
    sessions = electronic_sessions()
    write_store(tmp_path / "kn", sessions)
    kset = load_student_knowledge(config(host, tmp_path / "kn"), sessions)
    assert kset.kinds == ["patterns"] and kset.domains == ["electronic"] and kset.of_kind("patterns")
    selection = kset.selection["electronic"]
    assert selection["sampler"] is None and selection["all_records"] is True
    counts = selection["kinds"]["patterns"]
    assert counts["used"] == 10 and counts["fingerprint_source"] == "config"
    assert all(set(p.data["categories"]) <= {"Cameras", "Lenses", "Laptops", "Mice", "Hoses", "Nozzles", "Other"}
               for p in kset.items)


def test_a_sampler_rebuilds_the_distillations_selection(host, tmp_path):
    sessions = electronic_sessions()
    write_store(tmp_path / "kn", sessions)
    cfg = config(host, tmp_path / "kn", sampling={"sampler": "random", "ratio": 0.5, "seed": 3})
    first, again = load_student_knowledge(cfg, sessions), load_student_knowledge(cfg, sessions)
    selection = first.selection["electronic"]
    assert selection["sampler"] == "random" and len(selection["session_ids"]) == 5
    assert first.to_json() == again.to_json()
    limited = load_student_knowledge(config(host, tmp_path / "kn", distill_max_sessions=4), sessions)
    assert limited.selection["electronic"]["session_ids"] == ["0", "1", "2", "3"]


def test_other_domains_are_read_for_multi_domain_sets(host, tmp_path):
    write_store(tmp_path / "kn", electronic_sessions())
    write_store(tmp_path / "kn", electronic_sessions(6), "clothing")
    asked = []

    def load(cfg, domain):
        asked.append(domain)
        return electronic_sessions(6)

    cfg = config(host, tmp_path / "kn", sampling={"sampler": "random", "ratio": 0.5, "seed": 1,
                                                   "domains": ["electronic", "clothing"]})
    kset = load_student_knowledge(cfg, electronic_sessions(), load_sessions=load)
    assert asked == ["clothing"] and kset.domains == ["electronic", "clothing"]
    assert {i.domain for i in kset.items} == {"electronic", "clothing"}


def test_a_missing_store_says_to_distil_first(host, tmp_path):
    with pytest.raises(KnowledgeStoreMissing, match="bundlellm distill -c") as caught:
        load_student_knowledge(config(host, tmp_path / "nowhere"), electronic_sessions())
    assert isinstance(caught.value, BundleLLMError)


def test_a_kind_never_distilled_is_named(host, tmp_path):
    write_store(tmp_path / "kn", electronic_sessions())
    cfg = config(host, tmp_path / "kn", knowledge_use=["patterns", "thoughts"], teacher={"model": "big"})
    with pytest.raises(KnowledgeNotDistilled, match="no ok records of thoughts for electronic.*knowledge_use"):
        load_student_knowledge(cfg, electronic_sessions())
    other = config(host, tmp_path / "kn", patterns={"min_support": 0.2})  # settings the store never saw
    with pytest.raises(KnowledgeNotDistilled, match="other extractor or teacher settings"):
        load_student_knowledge(other, electronic_sessions())


def test_a_one_domain_set_of_another_domain_is_refused(host, tmp_path):
    write_store(tmp_path / "kn", electronic_sessions(), "clothing")
    cfg = config(host, tmp_path / "kn", sampling={"sampler": "random", "ratio": 0.5, "domains": ["clothing"]})
    with pytest.raises(KnowledgeDomainMismatch, match="Add electronic to sampling.domains"):
        load_student_knowledge(cfg, electronic_sessions())


def test_the_teacher_comes_from_the_config_else_from_a_store_with_one_teacher(host, tmp_path):
    sessions = electronic_sessions()
    write_store(tmp_path / "one", sessions, thoughts_teachers=["big"])
    kset = load_student_knowledge(config(host, tmp_path / "one", knowledge_use=["thoughts"]), sessions)
    assert len(kset.of_kind("thoughts")) == 10
    assert kset.selection["electronic"]["kinds"]["thoughts"]["fingerprint_source"] == "store"

    write_store(tmp_path / "two", sessions, thoughts_teachers=["big", "small"])
    with pytest.raises(AmbiguousTeacher, match=r"2 teacher configurations.*big.*small.*`teacher:` block"):
        load_student_knowledge(config(host, tmp_path / "two", knowledge_use=["thoughts"]), sessions)
    chosen = load_student_knowledge(config(host, tmp_path / "two", knowledge_use=["thoughts"],
                                           teacher={"model": "small"}), sessions)
    fp = extractor_fingerprint(ThoughtsExtractor(), TeacherSettings(model="small").identity())
    assert chosen.selection["electronic"]["kinds"]["thoughts"]["fingerprint"] == fp
    assert chosen.selection["electronic"]["kinds"]["thoughts"]["fingerprint_source"] == "config"


def test_knowledge_use_is_checked(host, tmp_path):
    with pytest.raises(SettingsError, match="knowledge_use"):
        load_student_knowledge(config(host, tmp_path, knowledge_use=[3]))
    with pytest.raises(SettingsError, match="more than once"):
        load_student_knowledge(config(host, tmp_path, knowledge_use=["patterns", "patterns"]))


def test_bundle_config_accepts_knowledge_use_and_names_an_unknown_kind():
    from recbole_bundlellm.config import BundleConfig
    from recbole_bundlellm.extension.host import PluginError

    assert BundleConfig("Freq", "electronic")["knowledge_use"] == []
    given = BundleConfig("Freq", "electronic", config_dict={"knowledge_use": ["patterns"]})
    assert given["knowledge_use"] == ["patterns"]
    with pytest.raises(PluginError, match="unknown extractor 'patern'.*did you mean 'patterns'"):
        BundleConfig("Freq", "electronic", config_dict={"knowledge_use": ["patern"]})


def test_a_student_rebuilds_the_set_its_distillation_wrote(tiny_data, tmp_path):
    """End to end: `distill` writes a set; a student config with the same keys gets the same set."""
    import json

    from recbole_bundlellm.config import BundleConfig
    from recbole_bundlellm.commands.distill import distill

    keys = {"dataset": "clothing", "data_path": str(tiny_data), "knowledge_dir": str(tmp_path / "kn"),
            "knowledge_types": ["patterns"], "patterns": {"min_count": 1},
            "sampling": {"sampler": "length", "ratio": 0.5, "seed": 3}}
    written = json.loads(Path(distill([], keys).knowledge_set).read_text())
    student = BundleConfig("Freq", None, [], {**keys, "knowledge_use": ["patterns"]})
    kset = load_student_knowledge(student)  # reads the training sessions itself
    assert kset.to_json()["items"] == written["items"] and kset.items
    assert kset.selection["clothing"]["session_ids"] == written["selection"]["clothing"]["session_ids"]
