"""The built-in samplers, session difficulty and knowledge-set composition."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Sequence

import pytest
from bundlellm_builtin.knowledge.patterns import PatternsExtractor
from bundlellm_builtin.knowledge.rules import RulesExtractor
from bundlellm_builtin.sampling.samplers import (
    DifficultySampler,
    DiversitySampler,
    LengthSampler,
    RandomSampler,
    coverage_elements,
)

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.knowledge.extractor import Extraction, KnowledgeExtractor
from recbole_bundlellm.knowledge.records import KnowledgeItem, KnowledgeRecord
from recbole_bundlellm.knowledge.store import KnowledgeStore
from recbole_bundlellm.sampling.compose import (
    accumulate_domains,
    aggregate_formats,
    build_knowledge_set,
    select_sessions,
    write_knowledge_set,
)
from recbole_bundlellm.sampling.difficulty import exact_f1, session_difficulty
from recbole_bundlellm.sampling.knowledge_set import KnowledgeSet
from recbole_bundlellm.sampling.sampler import SamplingContext


# -- helpers ------------------------------------------------------------------------------------
def make_session(sid: str, cats: Sequence[str], bundles: Sequence[Sequence[int]] = ((0, 1),),
                 intents: Sequence[str] = (), *, prefix: str | None = None) -> Session:
    """A session whose items are ``<prefix or sid>-<position>``, with ``cats`` as their categories and
    bundles given as item positions."""
    prefix = prefix if prefix is not None else sid
    items = tuple(f"{prefix}-{i}" for i in range(len(cats)))
    return Session(sid, items, tuple(f"title {i}" for i in items), tuple(cats),
                   tuple(frozenset(items[i] for i in b) for b in bundles), tuple(intents))


def plain_sessions(n: int, length_of=lambda i: 2 + i % 5) -> list[Session]:
    return [make_session(str(i), [f"c{j}" for j in range(length_of(i))]) for i in range(n)]


def all_samplers() -> list:
    return [RandomSampler(), LengthSampler(), DiversitySampler(), DifficultySampler()]


def some_difficulty(sessions: Sequence[Session]) -> dict[str, float]:
    return {s.session_id: (int(s.session_id) * 7 % 11) / 10 for s in sessions}


class FakeExtractor(KnowledgeExtractor):
    """One item per record: the record's text, keeping its session."""

    name = "alpha"

    def extract_session(self, session: Session, teacher=None) -> Extraction:
        return Extraction("ok", {}, f"knowledge of {session.session_id}")

    def aggregate(self, records: Sequence[KnowledgeRecord], domain: str) -> list[KnowledgeItem]:
        return [KnowledgeItem(self.name, domain, r.text, r.session_id, 1.0, {"unit": r.unit}) for r in records]


class OtherExtractor(FakeExtractor):
    name = "beta"


def record(kind: str, domain: str, sid: str, status: str = "ok", fingerprint: str = "fp",
           **content) -> KnowledgeRecord:
    return KnowledgeRecord(kind, domain, sid, fingerprint, status, dict(content),
                           f"{kind} of {domain}/{sid}" if status == "ok" else "",
                           None if status == "ok" else "unusable answer", sid)


def fill_store(store: KnowledgeStore, records: Sequence[KnowledgeRecord]) -> None:
    with store.writer():
        for r in records:
            assert store.put_record(r)


# -- samplers -----------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5, 0.7])
@pytest.mark.parametrize("sampler", all_samplers(), ids=lambda s: s.name)
def test_every_sampler_returns_round_ratio_n_distinct_known_ids(sampler, ratio):
    sessions = plain_sessions(23)
    chosen = select_sessions(sampler, sessions, ratio, seed=3, difficulty=some_difficulty(sessions))
    assert len(chosen) == round(ratio * 23)
    assert len(set(chosen)) == len(chosen)
    assert set(chosen) <= {s.session_id for s in sessions}


@pytest.mark.parametrize("sampler", all_samplers(), ids=lambda s: s.name)
def test_every_sampler_is_deterministic_and_ignores_input_order(sampler):
    sessions = plain_sessions(30)
    diff = some_difficulty(sessions)
    first = select_sessions(sampler, sessions, 0.4, seed=11, difficulty=diff)
    again = select_sessions(sampler, sessions, 0.4, seed=11, difficulty=diff)
    shuffled = select_sessions(sampler, list(reversed(sessions)), 0.4, seed=11, difficulty=diff)
    assert first == again == shuffled


def test_random_sampler_depends_on_the_seed():
    sessions = plain_sessions(40)
    by_seed = {seed: select_sessions(RandomSampler(), sessions, 0.5, seed) for seed in range(5)}
    assert len({tuple(v) for v in by_seed.values()}) == 5


def test_selection_is_the_same_in_another_process_whatever_the_hash_seed():
    code = ("from recbole_bundlellm.data.sessions import Session\n"
            "from recbole_bundlellm.sampling.compose import select_sessions\n"
            "from bundlellm_builtin.sampling.samplers import RandomSampler, DiversitySampler\n"
            "s=[Session(f'x{i}',('a','b'),('t','u'),(f'c{i%4}','d'),(frozenset({'a','b'}),),(f'I{i%3}',)) "
            "for i in range(30)]\n"
            "print(select_sessions(RandomSampler(), s, 0.3, 'seed') + select_sessions(DiversitySampler(), s, 0.3, 7))\n")
    outputs = []
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
    assert outputs[0].count("'x") == 18


def test_ratio_outside_bounds_is_rejected():
    sessions = plain_sessions(10)
    for ratio in (0.05, 0.09, 0.71, 1.0):
        with pytest.raises(ValueError, match="between 0.1 and 0.7"):
            select_sessions(RandomSampler(), sessions, ratio, 0)
    with pytest.raises(ValueError, match="between 0.1 and 0.7"):
        select_sessions(RandomSampler(), [], 0.9, 0)
    assert select_sessions(RandomSampler(), [], 0.5, 0) == []


def test_length_sampler_orders_by_length():
    sessions = plain_sessions(20, length_of=lambda i: 2 + i)  # lengths 2..21, all distinct
    longest = select_sessions(LengthSampler(), sessions, 0.25, 0)
    assert longest == ["19", "18", "17", "16", "15"]
    shortest = select_sessions(LengthSampler(LengthSampler.Settings(order="shortest")), sessions, 0.25, 0)
    assert shortest == ["0", "1", "2", "3", "4"]


def test_length_sampler_breaks_ties_by_seed_only():
    # four sessions of length 6 compete for two places after the two of length 9
    lengths = {"a": 9, "b": 9, "c": 6, "d": 6, "e": 6, "f": 6, "g": 2, "h": 2, "i": 2, "j": 2}
    sessions = [make_session(k, ["x"] * n) for k, n in lengths.items()]
    picks = [select_sessions(LengthSampler(), sessions, 0.4, seed) for seed in range(12)]
    for chosen in picks:
        assert sorted(chosen[:2]) == ["a", "b"] and set(chosen[2:]) <= {"c", "d", "e", "f"}
    assert len({frozenset(c[2:]) for c in picks}) > 1  # the seed does decide ties


def test_coverage_elements_use_bundled_items_and_normalised_intents():
    s = make_session("s", ["shirt", "pants", "hat"], bundles=[(0, 1)], intents=["  Summer   OUTFIT "])
    assert coverage_elements(s, "both") == {("category", "shirt"), ("category", "pants"),
                                            ("intent", "summer outfit")}
    assert coverage_elements(s, "categories") == {("category", "shirt"), ("category", "pants")}
    assert coverage_elements(s, "intents") == {("intent", "summer outfit")}
    unlabeled = make_session("u", ["shirt", "hat"], bundles=[])
    assert coverage_elements(unlabeled, "categories") == {("category", "shirt"), ("category", "hat")}


def _diversity_example() -> list[Session]:
    # 10 near-identical sessions and 5 that each bring two new categories
    same = [make_session(f"s{i}", ["shirt", "pants", "shirt"], intents=["Office"]) for i in range(10)]
    new = [make_session(f"n{i}", [f"cat{i}a", f"cat{i}b"], intents=["office"]) for i in range(5)]
    return same + new


def _covered_categories(sessions: Sequence[Session], chosen: Sequence[str]) -> set[str]:
    by_id = {s.session_id: s for s in sessions}
    return {e for sid in chosen for kind, e in coverage_elements(by_id[sid], "categories")}


def test_diversity_covers_more_categories_than_random():
    sessions = _diversity_example()  # 12 categories in all; 0.4 * 15 = 6 sessions can cover them
    random_coverage = []
    for seed in range(10):
        chosen = select_sessions(DiversitySampler(), sessions, 0.4, seed)
        assert len(_covered_categories(sessions, chosen)) == 12
        random_coverage.append(len(_covered_categories(sessions, select_sessions(RandomSampler(), sessions, 0.4, seed))))
    assert max(random_coverage) < 12


def test_diversity_by_intents_then_fills_up_in_seeded_order():
    sessions = [make_session(str(i), ["a", "b"], intents=[f"Intent {i % 3}"]) for i in range(10)]
    chosen = select_sessions(DiversitySampler(DiversitySampler.Settings(by="intents")), sessions, 0.5, 1)
    intents = [sessions[int(sid)].intents[0] for sid in chosen]
    assert len(chosen) == 5
    assert sorted(intents[:3]) == ["Intent 0", "Intent 1", "Intent 2"]  # the three intents come first
    assert select_sessions(DiversitySampler(DiversitySampler.Settings(by="intents")), sessions, 0.5, 1) == chosen


def test_difficulty_sampler_orders_by_difficulty_and_puts_unknown_last():
    sessions = plain_sessions(10)
    difficulty = {"0": 0.1, "1": 0.9, "2": 0.5, "3": 0.7, "4": 0.0, "5": 0.3, "6": 0.8, "7": 0.2}  # 8, 9 unknown
    hardest = select_sessions(DifficultySampler(), sessions, 0.5, 0, difficulty)
    assert hardest == ["1", "6", "3", "2", "5"]
    easiest = DifficultySampler(DifficultySampler.Settings(order="easiest"))
    assert select_sessions(easiest, sessions, 0.5, 0, difficulty) == ["4", "0", "7", "5", "2"]
    everything = DifficultySampler().select(SamplingContext(sessions, random.Random(0), difficulty), 10)
    assert set(everything[-2:]) == {"8", "9"}


def test_difficulty_sampler_needs_difficulties():
    with pytest.raises(ValueError, match="needs session difficulties"):
        select_sessions(DifficultySampler(), plain_sessions(10), 0.3, 0)


# -- session difficulty ---------------------------------------------------------------------------
def test_exact_f1_matches_bundle_metrics_definition():
    assert exact_f1([["a", "b"], ["c", "d"]], [{"a", "b"}]) == pytest.approx(2 / 3)
    assert exact_f1([["a", "b"]], [{"a", "b"}, {"c", "d"}]) == pytest.approx(2 / 3)
    assert exact_f1([["a", "c"]], [{"a", "b"}]) == 0.0
    assert exact_f1(None, [{"a", "b"}]) == 0.0
    assert exact_f1([["a"]], [{"a", "b"}]) == 0.0  # single-item bundles are dropped: no prediction


def _freq_sessions() -> list[Session]:
    common = [make_session(f"t{i}", ["shirt", "pants"]) for i in range(8)]
    easy = make_session("easy", ["shirt", "pants", "hat"], bundles=[(0, 1)])
    # {shirt, pants} is the most supported pattern, so Freq bundles them; the truth is shirt+sock
    hard = make_session("hard", ["shirt", "pants", "sock"], bundles=[(0, 2)])
    return [*common, easy, hard]


def test_session_difficulty_falls_back_to_freq():
    sessions = _freq_sessions()
    difficulty, source = session_difficulty(sessions)
    assert source == "freq"
    assert set(difficulty) == {s.session_id for s in sessions}
    assert difficulty["easy"] == 0.0 and difficulty["t0"] == 0.0
    assert difficulty["hard"] == 1.0


def test_session_difficulty_from_rules_records_and_mixed():
    sessions = _freq_sessions()
    records = [record("rules", "d", s.session_id, "failed" if i % 2 else "ok", difficulty=0.25)
               for i, s in enumerate(sessions)]
    readers = {"rules": RulesExtractor(), "patterns": PatternsExtractor()}
    difficulty, source = session_difficulty(sessions, records, readers)
    assert source == "teacher"
    assert difficulty == {s.session_id: 0.25 for s in sessions}

    partial = [record("rules", "d", "hard", difficulty=0.4), record("rules", "d", "easy", difficulty=1.7),
               record("patterns", "d", "t0", difficulty=0.9),  # an extractor without difficulty: ignored
               record("rules", "d", "t1")]  # no difficulty value: falls back
    difficulty, source = session_difficulty(sessions, partial, readers)
    assert source == "teacher+freq"
    assert difficulty["hard"] == 0.4 and difficulty["easy"] == 1.0  # clamped to [0, 1]
    assert difficulty["t0"] == 0.0 and difficulty["t1"] == 0.0  # Freq's exact answers


# -- composition ----------------------------------------------------------------------------------
def _domain_sessions(domain: str, n: int) -> list[Session]:
    return [make_session(f"{domain[0]}{i}", ["c1", "c2", "c3"][: 2 + i % 2], prefix=f"{domain}{i}") for i in range(n)]


def _records_for(domain: str, sessions: Sequence[Session]) -> list[KnowledgeRecord]:
    out = []
    for i, s in enumerate(sessions):
        if i % 4 != 3:  # every 4th session has no alpha record at all
            out.append(record("alpha", domain, s.session_id, "failed" if i % 4 == 2 else "ok"))
        out.append(record("beta", domain, s.session_id))
        out.append(record("alpha", domain, s.session_id, fingerprint="old"))  # another configuration
    return out


@pytest.fixture
def store(tmp_path) -> KnowledgeStore:
    sessions = _domain_sessions("clothing", 20) + _domain_sessions("electronic", 10)
    st = KnowledgeStore(tmp_path / "store", fsync=False)
    fill_store(st, _records_for("clothing", sessions[:20]) + _records_for("electronic", sessions[20:]))
    return st


EXTRACTORS = {"alpha": FakeExtractor(), "beta": OtherExtractor()}
FPS = {"alpha": "fp", "beta": "fp"}


def test_build_knowledge_set_uses_only_selected_ok_records(store):
    sessions = _domain_sessions("clothing", 20)
    kset = build_knowledge_set(store, {"clothing": sessions}, EXTRACTORS, FPS, RandomSampler(), 0.5, 4)
    sel = kset.selection["clothing"]
    chosen = sel["session_ids"]
    assert len(chosen) == 10
    ok_alpha = {s.session_id for i, s in enumerate(sessions) if i % 4 in (0, 1)}
    alpha_ids = [item.session_id for item in kset.of_kind("alpha")]
    beta_ids = [item.session_id for item in kset.of_kind("beta")]
    assert beta_ids == chosen  # every session has a beta record: the selection, in its order
    assert alpha_ids == [sid for sid in chosen if sid in ok_alpha]
    assert all(item.text.startswith(f"{item.kind} of clothing/") for item in kset.items)
    assert sel["kinds"]["alpha"]["available"] == 10  # ok records of fingerprint "fp" only
    assert sel["kinds"]["alpha"]["used"] == len(alpha_ids)
    assert sel["kinds"]["alpha"]["selected_without_record"] == 10 - len(alpha_ids)
    assert sel["kinds"]["beta"] == {"fingerprint": "fp", "available": 20, "used": 10,
                                    "selected_without_record": 0, "items": 10}
    assert {k: sel[k] for k in ("sampler", "ratio", "seed", "n_sessions", "difficulty_source")} == \
        {"sampler": "random", "ratio": 0.5, "seed": 4, "n_sessions": 20, "difficulty_source": "none"}
    assert kset.kinds == ["alpha", "beta"] and kset.domains == ["clothing"]


def test_build_knowledge_set_is_deterministic_whatever_the_store_order(store, tmp_path):
    sessions = _domain_sessions("clothing", 20)
    first = build_knowledge_set(store, {"clothing": sessions}, EXTRACTORS, FPS, DiversitySampler(), 0.3, 9)
    again = build_knowledge_set(store, {"clothing": sessions}, EXTRACTORS, FPS, DiversitySampler(), 0.3, 9)
    reversed_store = KnowledgeStore(tmp_path / "reversed", fsync=False)
    fill_store(reversed_store, list(reversed(_records_for("clothing", sessions))))
    other = build_knowledge_set(reversed_store, {"clothing": sessions}, EXTRACTORS, FPS, DiversitySampler(), 0.3, 9)
    assert first.to_json() == again.to_json() == other.to_json()
    assert first.selection["clothing"]["sampler_settings"] == {"by": "both"}


def test_build_knowledge_set_requires_a_fingerprint_per_kind(store):
    with pytest.raises(ValueError, match="beta"):
        build_knowledge_set(store, {"clothing": _domain_sessions("clothing", 20)}, EXTRACTORS, {"alpha": "fp"},
                            RandomSampler(), 0.5, 0)


def test_accumulate_domains_keeps_each_items_domain(store):
    by_domain = {"clothing": _domain_sessions("clothing", 20), "electronic": _domain_sessions("electronic", 10)}
    kset = accumulate_domains("beta", store, by_domain, extractor=OtherExtractor(), fingerprint="fp",
                              sampler=RandomSampler(), ratio=0.3, seed=1)
    assert kset.kinds == ["beta"] and kset.domains == ["clothing", "electronic"]
    assert len(kset.of_domain("clothing")) == 6 and len(kset.of_domain("electronic")) == 3
    for domain in by_domain:
        assert [i.session_id for i in kset.of_domain(domain)] == kset.selection[domain]["session_ids"]
        assert all(i.text.startswith(f"beta of {domain}/") for i in kset.of_domain(domain))


def test_aggregate_formats_shares_one_selection(store):
    sessions = _domain_sessions("electronic", 10)
    kset = aggregate_formats("electronic", store, sessions, extractors=EXTRACTORS, fingerprints=FPS,
                             sampler=LengthSampler(), ratio=0.5, seed=2)
    chosen = kset.selection["electronic"]["session_ids"]
    assert sorted(chosen) == ["e1", "e3", "e5", "e7", "e9"]  # the sessions of length 3
    assert kset.counts() == {"alpha": 3, "beta": 5}
    # ok alpha records exist for e0, e1, e4, e5, e8, e9: the selected ones, in selection order
    assert [i.session_id for i in kset.of_kind("alpha")] == [sid for sid in chosen if sid in {"e1", "e5", "e9"}]
    assert [i.session_id for i in kset.of_kind("beta")] == chosen
    assert set(kset.selection) == {"electronic"}


def test_difficulty_sampler_measures_difficulty_from_stored_rules(tmp_path):
    sessions = _domain_sessions("clothing", 10)
    st = KnowledgeStore(tmp_path / "s", fsync=False)
    fill_store(st, [record("rules", "clothing", s.session_id, "failed" if i == 4 else "ok", difficulty=i / 10)
                    for i, s in enumerate(sessions)]
               + [record("rules", "clothing", s.session_id, fingerprint="old", difficulty=1 - i / 10)
                  for i, s in enumerate(sessions)])
    rules = RulesExtractor()
    kset = aggregate_formats("clothing", st, sessions, extractors={"rules": rules}, fingerprints={"rules": "fp"},
                             sampler=DifficultySampler(), ratio=0.3, seed=0)
    sel = kset.selection["clothing"]
    assert sel["session_ids"] == ["c9", "c8", "c7"] and sel["difficulty_source"] == "teacher"
    given = aggregate_formats("clothing", st, sessions, extractors={"rules": rules}, fingerprints={"rules": "fp"},
                              sampler=DifficultySampler(), ratio=0.3, seed=0,
                              difficulty=({"c0": 1.0, "c1": 0.9, "c2": 0.8}, "teacher"))
    assert given.selection["clothing"]["session_ids"] == ["c0", "c1", "c2"]


class GradedExtractor(FakeExtractor):
    """An extractor of no built-in kind that knows how hard its sessions are."""

    name = "graded"

    def difficulty(self, record: KnowledgeRecord) -> float | None:
        return record.content.get("grade")


def test_difficulty_comes_from_any_extractor_that_provides_it(tmp_path):
    sessions = _domain_sessions("clothing", 10)
    st = KnowledgeStore(tmp_path / "s", fsync=False)
    fill_store(st, [record("graded", "clothing", s.session_id, grade=i / 10) for i, s in enumerate(sessions[:8])]
               + [record("alpha", "clothing", s.session_id, difficulty=1.0) for s in sessions])
    extractors = {"alpha": FakeExtractor(), "graded": GradedExtractor()}  # alpha provides no difficulty
    kset = aggregate_formats("clothing", st, sessions, extractors=extractors, fingerprints=FPS | {"graded": "fp"},
                             sampler=DifficultySampler(), ratio=0.3, seed=0)
    sel = kset.selection["clothing"]
    # c8 and c9 have no graded record: Freq covers them (exact on them: difficulty 0); alpha's 1.0 is never read
    assert sel["difficulty_source"] == "graded+freq"
    assert sel["session_ids"] == ["c7", "c6", "c5"]


def test_write_and_load_round_trip(store, tmp_path):
    kset = build_knowledge_set(store, {"clothing": _domain_sessions("clothing", 20)}, EXTRACTORS, FPS,
                               RandomSampler(), 0.2, 5)
    path = write_knowledge_set(kset, tmp_path / "sets" / "random-0.2-5.json")
    loaded = KnowledgeSet.load(path)
    assert loaded.to_json() == kset.to_json()
    assert loaded.items == kset.items
    assert json.loads(path.read_text(encoding="utf-8"))["counts"] == kset.counts()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


# -- plugin registration --------------------------------------------------------------------------
def test_plugin_host_registers_the_four_samplers():
    from recbole_bundlellm.extension.host import PluginHost
    from recbole_bundlellm.settings import SettingsError

    host = PluginHost()
    try:
        assert host.names("sampler") == ["difficulty", "diversity", "length", "random"]
        sampler = host.create("sampler", "length", {"length": {"order": "shortest"}})
        assert isinstance(sampler, LengthSampler) and sampler.settings.order == "shortest"
        assert host.create("sampler", "random", {}).name == "random"
        with pytest.raises(SettingsError, match="did you mean 'order'"):
            host.create("sampler", "length", {"length": {"ordr": "x"}})
        with pytest.raises(SettingsError, match="must be one of"):
            host.create("sampler", "difficulty", {"difficulty": {"order": "longest"}})
    finally:
        host.close()
