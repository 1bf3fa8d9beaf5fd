"""Pairwise: pair labels and features on hand-made sessions, grouping, tuning on valid, and a run
through RecBole on the tiny dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.models.baselines import pairwise as pw
from recbole_bundlellm.models.baselines.pairwise import (
    PAIR_FEATURES,
    CooccurrenceStats,
    Grouping,
    PairFeaturizer,
    Pairwise,
    group_pairs,
    pair_labels,
    session_pairs,
    tune_grouping,
)
from recbole_bundlellm.commands.runner import run

YAML = Path(pw.__file__).with_name("Pairwise.yaml")


def col(name: str) -> int:
    return PAIR_FEATURES.index(name)


def defaults(**overrides) -> dict:
    """Pairwise.yaml as a config dict (so the tests also check that it holds every key)."""
    return {**yaml.safe_load(YAML.read_text(encoding="utf-8")), **overrides}


def camera_session(sid: str = "s", offset: int = 0, bundles: bool = True) -> Session:
    """A camera bundle (0, 1), a tea bundle (2, 3) and an item in no bundle (4)."""
    ids = tuple(str(offset + k) for k in range(5))
    return Session(
        sid, ids,
        ("Canon EOS camera body black", "Canon EOS camera battery charger", "Organic green tea bags",
         "Stainless steel tea kettle", "USB flash drive"),
        ("Cameras", "Batteries", "Tea", "Kettles", "Flash Drives"),
        (frozenset(ids[:2]), frozenset(ids[2:4])) if bundles else (),
    )


def test_pair_labels_mark_the_pairs_of_one_bundle():
    labels = dict(zip(session_pairs(5), pair_labels(camera_session())))
    assert {pair for pair, label in labels.items() if label} == {(0, 1), (2, 3)}
    assert len(labels) == 10  # every unordered pair once, the no-bundle item only in negatives


def test_stats_count_leaf_pairs_together_and_apart():
    stats = CooccurrenceStats.count([camera_session("a"), camera_session("b", offset=10)])
    assert stats.category_together[frozenset(("Cameras", "Batteries"))] == 2
    assert stats.category_apart[frozenset(("Cameras", "Tea"))] == 2
    assert stats.category_in_bundle["Flash Drives"] == 0 and stats.category_seen["Flash Drives"] == 2
    assert stats.pair_rate == pytest.approx(2 / 10) and stats.bundle_rate == pytest.approx(4 / 5)


def test_features_of_a_hand_made_session():
    train = [camera_session("a"), camera_session("b", offset=10)]
    featurizer = PairFeaturizer(smoothing=5.0).fit([t for s in train for t in s.titles])
    x = featurizer.transform(camera_session(bundles=False), CooccurrenceStats.count(train))
    rows = {pair: row for pair, row in zip(session_pairs(5), x)}
    assert x.shape == (10, len(PAIR_FEATURES))
    # Titles: the two Canon items share words, the camera and the tea share none.
    assert rows[(0, 1)][col("word_cosine")] > 0.3 and rows[(0, 2)][col("word_cosine")] == 0
    assert rows[(0, 1)][col("shared_tokens")] == 3  # canon, eos, camera
    assert rows[(0, 1)][col("word_rank")] == 0  # each is the other's most similar title
    # Categories: seen together twice in training bundles, smoothed towards the pair prior.
    assert rows[(0, 1)][col("category_together")] == pytest.approx(np.log1p(2))
    assert rows[(0, 1)][col("category_affinity")] == pytest.approx((2 + 5 * 0.2) / (2 + 5))
    assert rows[(0, 2)][col("category_affinity")] == pytest.approx((0 + 5 * 0.2) / (2 + 5))
    assert rows[(0, 1)][col("same_category")] == 0
    # Order.
    assert rows[(0, 1)][col("adjacent")] == 1 and rows[(0, 4)][col("distance")] == 4
    assert rows[(0, 4)][col("session_length")] == 5


def test_training_statistics_are_out_of_fold():
    """A leaf pair seen in one training session only must not count for that session's own rows."""
    unique = Session("u", ("1", "2", "3"), ("red wool scarf", "red wool hat", "blue jeans"),
                     ("Scarves", "Hats", "Jeans"), (frozenset({"1", "2"}),))
    sessions = [unique] + [camera_session(str(k), offset=10 * (k + 1)) for k in range(3)]
    for folds, expected in ((2, 0.0), (1, np.log1p(1))):
        model = Pairwise(defaults(pairwise_folds=folds), None)
        x, y, index = model.training_matrix(sessions)
        row = np.flatnonzero(index == 0)[0]  # the pair (scarf, hat) of session "u"
        assert y[row] == 1 and x[row, col("category_together")] == pytest.approx(expected)
    assert model.stats.category_together[frozenset(("Scarves", "Hats"))] == 1  # generation sees all


def test_training_categories_can_be_predicted_out_of_fold():
    """Bundle items get a leaf predicted by a model that never saw them; others keep theirs."""
    sessions = [camera_session(str(k), offset=10 * k) for k in range(4)]
    sessions[0] = Session("0", sessions[0].item_ids, sessions[0].titles,
                          ("Camera Bodies",) + sessions[0].categories[1:], sessions[0].bundles)
    out = pw.predicted_training_categories(sessions, folds=2, seed=0)
    assert out[0].categories[0] != "Camera Bodies"  # the only item with that leaf: unseen by its fold's model
    assert [s.categories[4] for s in out] == ["Flash Drives"] * 4  # in no bundle: as given
    assert [s.bundles for s in out] == [s.bundles for s in sessions]


def chain() -> np.ndarray:
    """0-1 strong, 1-2 medium (0-2 weak), 3-4 strong, everything else weak."""
    p = np.full((5, 5), 0.05)
    for (i, j), v in {(0, 1): 0.9, (1, 2): 0.6, (0, 2): 0.1, (3, 4): 0.8}.items():
        p[i, j] = p[j, i] = v
    np.fill_diagonal(p, 0)
    return p


def test_grouping_gives_disjoint_bundles_of_two_or_more_items():
    connected = group_pairs(chain(), Grouping("connected", 0.5, "whole"))
    average = group_pairs(chain(), Grouping("average", 0.5, "whole"))
    assert connected == [(0, 1, 2), (3, 4)]  # the chain links 0 and 2 through 1
    assert average == [(0, 1), (3, 4)]  # item 2 averages 0.35 to {0, 1}: left out
    for bundles in (connected, average):
        members = [i for b in bundles for i in b]
        assert len(members) == len(set(members)) and set(members) <= set(range(5))
        assert all(len(b) >= 2 for b in bundles)


def test_fallbacks_when_no_pair_passes():
    weak = chain()
    assert group_pairs(weak, Grouping("average", 0.95, "whole")) == [(0, 1, 2, 3, 4)]
    assert group_pairs(weak, Grouping("average", 0.95, "best_pair")) == [(0, 1)]
    assert group_pairs(weak, Grouping("connected", 0.95, "none")) == []
    with pytest.raises(ValueError, match="grouping"):
        Grouping("single", 0.5, "whole")
    with pytest.raises(ValueError, match="pairwise_classifier"):
        Pairwise(defaults(pairwise_classifier="svm"), None)


def valid_set() -> tuple[list[np.ndarray], list[Session]]:
    """Sessions whose truth is {0, 1}, {3, 4}: connected needs a threshold above 0.6 to get it."""
    sessions = [Session(str(k), tuple("abcde"), tuple("abcde"), tuple("vwxyz"),
                        (frozenset("ab"), frozenset("de"))) for k in range(3)]
    return [chain() for _ in sessions], sessions


def test_tune_grouping_picks_the_best_exact_f1_first_in_grid_order():
    probs, sessions = valid_set()
    grouping, f1, jaccard = tune_grouping(probs, sessions, ["connected", "average"], ["whole"], [0.3, 0.5, 0.7])
    # connected at 0.3 and 0.5 joins item c (F1 0.5); 0.7 is exact; average at 0.5 is exact too but later.
    assert grouping == Grouping("connected", 0.7, "whole") and f1 == 1.0 and jaccard == 1.0


def test_model_tune_keeps_what_scores_best_on_valid(monkeypatch):
    probs, sessions = valid_set()
    model = Pairwise(defaults(pairwise_tune_thresholds=[0.3, 0.5, 0.7], pairwise_tune_groupings=["connected"]), None)
    monkeypatch.setattr(model, "probabilities", lambda s: probs[int(s.session_id)])
    chosen = model.tune(sessions)
    assert model.grouping == Grouping("connected", 0.7, "whole")
    assert chosen["valid_exact_f1"] == 1.0 and model.run_info["tuned"] is True
    untuned = Pairwise(defaults(pairwise_tune=False), None)
    assert untuned.tune(sessions) is None and untuned.grouping == Grouping("average", 0.5, "whole")


def test_the_trainer_tunes_only_models_that_override_tune(tiny_data):
    from recbole_bundlellm.commands.runner import run

    common = {"data_path": str(tiny_data)}
    floor = run("Floor", "clothing", config_dict={**common, "run_name": "floor"})
    pairwise = run("Pairwise", "clothing", config_dict={**common, "run_name": "pairwise"})
    assert "tune_seconds" not in floor.timing  # the valid sessions were not even read
    assert "tune_seconds" in pairwise.timing and pairwise.info["tuned"] is True


def test_pairwise_learns_the_hand_made_bundles():
    train = [camera_session(str(k), offset=10 * k) for k in range(8)]
    model = Pairwise(defaults(), None)
    model.fit_bundles(train)
    [prediction] = model.generate_bundles([camera_session("t", offset=100, bundles=False)])
    assert sorted(prediction.bundles) == [("100", "101"), ("102", "103")]  # 104 in no bundle


def test_yaml_documents_every_setting():
    lines = [line for line in YAML.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    assert all("# (" in line for line in lines), [line for line in lines if "# (" not in line]


def test_pairwise_runs_through_recbole_and_tunes_on_valid(tiny_data):
    result = run("Pairwise", "clothing", config_dict={"data_path": str(tiny_data)})
    assert result.info["tuned"] is True and "tune_seconds" in result.timing
    assert result.info["grouping"]["method"] in ("connected", "average")
    records = [json.loads(line) for line in (result.output_dir / "predictions.jsonl").read_text().splitlines()]
    for r in records:
        members = [item for bundle in r["predicted_bundles"] or [] for item in bundle]
        assert len(members) == len(set(members)) and set(members) <= set(r["items"])
    again = run("Pairwise", "clothing", config_dict={"data_path": str(tiny_data), "run_name": "again"})
    assert (again.output_dir / "predictions.jsonl").read_text() == (result.output_dir / "predictions.jsonl").read_text()
