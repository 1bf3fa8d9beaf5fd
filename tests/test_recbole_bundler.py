"""RecBoleBundler: RecBole models trained on a planted next-item view recover the planted bundles;
bad model names, unseen items and the YAML."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.evaluation.bundle_metrics import compute_bundle_metrics
from recbole_bundlellm.models.baselines import recbole_bundler as rb
from recbole_bundlellm.models.base import without_labels
from recbole_bundlellm.models.baselines.recbole_bundler import BundlerModelError, RecBoleBundler

YAML = Path(rb.__file__).with_name("RecBoleBundler.yaml")
#: Small settings for the neural models (seconds on a CPU).
SMALL = {"SASRec": {"n_layers": 1, "n_heads": 1, "hidden_size": 8, "inner_size": 16},
         "BPR": {"embedding_size": 8}, "LightGCN": {"embedding_size": 8, "n_layers": 1}}


def defaults(**overrides) -> dict:
    """RecBoleBundler.yaml as a config dict (so the tests also check that it holds every key)."""
    return {**yaml.safe_load(YAML.read_text(encoding="utf-8")), **overrides}


#: Planted structure: 10 groups of 2-3 items that are always bought together, plus 15 loose items.
GROUPS = [tuple(f"g{g}_{k}" for k in range(2 + g % 2)) for g in range(10)]
LOOSE = [f"n{j}" for j in range(15)]


def planted(prefix: str, count: int, seed: int, unseen: int = 0) -> list[Session]:
    """Sessions of two whole groups (the bundles) and one loose item, shuffled; the first
    ``unseen`` sessions hold a new loose item no training session has."""
    rng = random.Random(seed)
    out = []
    for k in range(count):
        a, b = rng.sample(GROUPS, 2)
        loose = f"new{k}" if k < unseen else rng.choice(LOOSE)
        items = [*a, *b, loose]
        rng.shuffle(items)
        # Titles share no word inside a group: the bundles must come from the model, not the titles.
        out.append(Session(f"{prefix}{k:03d}", tuple(items), tuple(f"product {x}" for x in items),
                           tuple("c" for _ in items), (frozenset(a), frozenset(b))))
    return out


def exact_f1(bundles: list, sessions: list[Session]) -> float:
    preds = [None if b is None else [frozenset(x) for x in b] for b in bundles]
    return compute_bundle_metrics(preds, [list(s.bundles) for s in sessions])["exact_f1"]


@pytest.fixture(scope="module")
def splits() -> tuple[list[Session], list[Session], list[Session]]:
    return planted("t", 80, seed=0), planted("v", 20, seed=1), planted("x", 20, seed=2, unseen=3)


@pytest.fixture(scope="module")
def itemknn(splits, tmp_path_factory) -> RecBoleBundler:
    """ItemKNN trained and tuned once for the module (in a temporary working directory)."""
    train, valid, _ = splits
    model = RecBoleBundler(defaults(bundler_model="ItemKNN"), None)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("itemknn"))
        model.fit_bundles(train)
        model.tune(valid)
    return model


def test_itemknn_recovers_the_planted_bundles_better_than_the_whole_session(itemknn, splits):
    _, _, test = splits
    predictions = itemknn.generate_bundles(without_labels(test))
    f1 = exact_f1([p.bundles for p in predictions], test)
    whole = exact_f1([[s.item_ids] for s in test], test)
    assert whole == 0.0  # two bundles and a loose item: the whole session is never a bundle
    assert f1 >= 0.8, (f1, itemknn.run_info)
    assert itemknn.run_info["tuned"] is True and itemknn.run_info["valid_exact_f1"] >= 0.8
    assert itemknn.run_info["affinity"].startswith("similarity matrix `w`")


def test_affinity_is_high_inside_a_group_and_probabilities_lie_in_0_1(itemknn, splits):
    _, _, test = splits
    session = test[5]
    prob = itemknn.probabilities(session)
    assert prob.shape == (len(session),) * 2 and np.allclose(prob, prob.T)
    assert prob.min() >= 0.0 and prob.max() <= 1.0 and np.all(np.diag(prob) == 0)
    pos = session.positions
    a, b = (sorted(bundle, key=pos.__getitem__) for bundle in session.bundles)
    assert prob[pos[a[0]], pos[a[1]]] > prob[pos[a[0]], pos[b[0]]]


def test_unseen_items_are_counted_and_get_the_fallback(itemknn, splits):
    _, valid, test = splits
    itemknn.generate_bundles(without_labels(test))
    counts = itemknn.run_info["unseen"]["counts"]
    assert itemknn.run_info["unseen"]["fallback"] == "title"
    assert counts["tune"]["unseen"] == 0 and counts["tune"]["items"] == sum(len(s) for s in valid)
    # Each generation adds up (this fixture's model generated the test split in earlier tests too).
    calls = counts["generate"]["sessions"] // len(test)
    assert counts["generate"]["unseen"] == 3 * calls and counts["generate"]["sessions_with_unseen"] == 3 * calls
    # The new item's pairs take their title cosine ("product newK" shares "product"), never NaN.
    prob = itemknn.probabilities(test[0])
    assert np.isfinite(prob).all()


def test_the_zero_fallback_keeps_unseen_items_out(splits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, valid, test = splits
    model = RecBoleBundler(defaults(bundler_model="ItemKNN", bundler_unseen="zero", bundler_tune=False,
                                    bundler_scale="rank"), None)
    model.fit_bundles(train)
    prob = model.probabilities(test[0])
    new = test[0].positions["new0"]
    assert np.all(prob[new] == 0.0)


@pytest.mark.parametrize("name,affinity,expected", [
    ("BPR", "auto", "`item_embedding`"),
    ("LightGCN", "auto", "`forward()[1]`"),
    ("SASRec", "auto", "`item_embedding`"),
    ("SASRec", "scores", "full_sort_predict"),
])
def test_the_required_models_train_with_recbole_and_generate(name, affinity, expected, splits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, valid, test = splits
    model = RecBoleBundler(defaults(bundler_model=name, bundler_affinity=affinity, bundler_epochs=2,
                                    bundler_model_args=SMALL[name], bundler_tune_thresholds=[0.3, 0.6, 0.9]), None)
    model.fit_bundles(train)
    model.tune(valid)
    assert expected in model.run_info["affinity"]
    assert 1 <= model.run_info["epochs_run"] <= 2 and model.run_info["items_trained"] == sum(map(len, GROUPS)) + len(LOOSE)
    for session, prediction in zip(test, model.generate_bundles(without_labels(test))):
        members = [x for b in prediction.bundles or [] for x in b]
        assert len(members) == len(set(members)) and set(members) <= set(session.item_ids)
    assert not list(tmp_path.iterdir())  # RecBole's files stayed in the temporary folder


def test_an_unknown_model_name_names_the_key_and_a_suggestion():
    with pytest.raises(BundlerModelError, match=r"bundler_model: 'SASRek' is not a RecBole item-scoring model.*"
                                                r"did you mean 'SASRec'\?"):
        RecBoleBundler(defaults(bundler_model="SASRek"), None)
    with pytest.raises(BundlerModelError, match=r"bundler_model: 'DeepFM' is RecBole's context-aware model"):
        RecBoleBundler(defaults(bundler_model="DeepFM"), None)
    with pytest.raises(BundlerModelError, match=r"'Pairwise' is not a RecBole item-scoring model"):
        RecBoleBundler(defaults(bundler_model="Pairwise"), None)
    with pytest.raises(ValueError, match=r"bundler_unseen 'titles' is not one of \['title', 'zero'\]"):
        RecBoleBundler(defaults(bundler_unseen="titles"), None)
    assert {"ItemKNN", "BPR", "LightGCN", "SASRec"} <= set(rb.item_scoring_models())


def test_a_misspelt_model_setting_is_a_clear_error(splits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = RecBoleBundler(defaults(bundler_model="SASRec", bundler_model_args={"hiden_size": 8}), None)
    with pytest.raises(BundlerModelError, match=r"bundler_model_args: 'hiden_size' .*did you mean 'hidden_size'"):
        model.fit_bundles(splits[0])


def test_a_model_without_item_affinity_is_a_clear_error(splits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = RecBoleBundler(defaults(bundler_model="Pop"), None)
    with pytest.raises(BundlerModelError, match="Pop gives no item-item affinity"):
        model.fit_bundles(splits[0])


def test_yaml_documents_every_setting():
    lines = [line for line in YAML.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    assert all("# (" in line for line in lines), [line for line in lines if "# (" not in line]
