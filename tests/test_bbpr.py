"""BBPR: greedy construction and negative sampling on hand-made scores, bad settings, and the
planted bundles of a tiny hand-built dataset recovered on its test split."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.evaluation.bundle_metrics import compute_bundle_metrics
from recbole_bundlellm.models.baselines import bbpr as bb
from recbole_bundlellm.models.base import without_labels
from recbole_bundlellm.models.baselines.bbpr import BBPR, greedy_bundles, negative_bundles
from recbole_bundlellm.settings import SettingsError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODELS = Path(bb.__file__).parent
YAML = MODELS / "BBPR.yaml"


def defaults(**overrides) -> dict:
    """NeuralBundle.yaml + BBPR.yaml as a config dict (so the tests also check the keys exist)."""
    shared = yaml.safe_load((MODELS / "NeuralBundle.yaml").read_text(encoding="utf-8"))
    return {**shared, **yaml.safe_load(YAML.read_text(encoding="utf-8")), "seed": 0, **overrides}


def chain_scores() -> tuple[np.ndarray, np.ndarray]:
    """Items 0-1-2 compatible (a triple), 3-4 a pair, 5 fits nothing."""
    compat = np.full((6, 6), -1.0)
    for (i, j), v in {(0, 1): 2.0, (0, 2): 1.8, (1, 2): 1.8, (3, 4): 1.5}.items():
        compat[i, j] = compat[j, i] = v
    return np.zeros(6), compat


def test_greedy_grows_the_best_pair_then_seeds_the_next():
    pref, compat = chain_scores()
    assert greedy_bundles(pref, compat, 0.0, -0.5, "whole") == [(0, 1, 2), (3, 4)]
    # A gain threshold above what item 2 adds (S falls from 2.0 to 1.87) keeps the pair.
    assert greedy_bundles(pref, compat, 0.0, 0.0, "whole") == [(0, 1), (3, 4)]
    # A pair threshold only the best pair passes: one bundle, the rest in no bundle.
    assert greedy_bundles(pref, compat, 1.9, -0.5, "whole") == [(0, 1, 2)]


def test_fallbacks_when_no_pair_passes():
    pref, compat = chain_scores()
    assert greedy_bundles(pref, compat, 5.0, 0.0, "whole") == [tuple(range(6))]
    assert greedy_bundles(pref, compat, 5.0, 0.0, "best_pair") == [(0, 1)]
    assert greedy_bundles(pref, compat, 5.0, 0.0, "none") == []


def test_bundle_score_is_mean_preference_plus_mean_compatibility():
    pref, compat = chain_scores()
    pref = pref + np.arange(6)
    assert bb.bundle_score(pref, compat, (0, 1, 2)) == pytest.approx(1.0 + (2.0 + 1.8 + 1.8) / 3)


def test_the_torch_bundle_score_matches_numpy():
    pref, compat = chain_scores()
    mask = torch.tensor([[1.0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]])
    got = BBPR._bundle_scores(torch.tensor(pref), torch.tensor(compat), mask.double())
    assert got.tolist() == pytest.approx([bb.bundle_score(pref, compat, b) for b in ((0, 1, 2), (3, 4, 5))])


def test_negatives_keep_the_size_swap_in_outsiders_and_are_never_true():
    truths = {frozenset({0, 1}), frozenset({2, 3})}
    rng = random.Random(0)
    negatives = [n for _ in range(50) for n in negative_bundles((0, 1), 5, truths, 4, rng)]
    assert negatives and all(len(n) == 2 and set(n) - {0, 1} for n in negatives)
    assert frozenset({2, 3}) not in {frozenset(n) for n in negatives}
    assert negative_bundles((0, 1, 2), 3, {frozenset({0, 1, 2})}, 4, rng) == []  # nothing outside


@pytest.mark.parametrize("key, value", [("bbpr_context", "user"), ("bbpr_fallback", "all"),
                                        ("bbpr_pair_quantile", 1.5), ("bbpr_negatives", 0)])
def test_bad_settings_are_clear_errors(key, value):
    with pytest.raises(SettingsError, match=key):
        BBPR(defaults(**{key: value}), None)


def test_yaml_documents_every_setting():
    lines = [line for line in YAML.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    assert all("# (" in line for line in lines), [line for line in lines if "# (" not in line]


# --- planted bundle structure ---------------------------------------------------------------
#: Bundle themes (a title template per member, its leaf) and loners that belong to no bundle.
THEMES = [
    [("{b} digital camera body", "Cameras"), ("{b} camera battery charger", "Batteries")],
    [("{b} organic green tea bags", "Tea"), ("{b} steel tea kettle", "Kettles"), ("{b} ceramic tea cup", "Cups")],
    [("{b} phone case cover", "Cases"), ("{b} glass screen protector", "Screen Protectors")],
    [("{b} yoga mat", "Yoga Mats"), ("{b} yoga block foam", "Yoga Blocks")],
]
LONERS = [("{b} usb flash drive", "Flash Drives"), ("{b} hdmi cable", "Cables"), ("{b} desk lamp", "Lamps"),
          ("{b} umbrella", "Umbrellas")]
BRANDS = ["acme", "zenith", "orion", "nova", "vega", "lumen", "atlas", "pico", "terra", "quill"]


def planted_session(sid: str, rng: random.Random) -> Session:
    """Two themes' bundles and one or two loners, shuffled; unique item ids per session."""
    members = [(t, themes) for themes in rng.sample(range(len(THEMES)), 2) for t in THEMES[themes]]
    members += [(t, None) for t in rng.sample(LONERS, rng.randint(1, 2))]
    rng.shuffle(members)
    ids = tuple(f"{sid}-{k}" for k in range(len(members)))
    titles = tuple(t.format(b=rng.choice(BRANDS)) for (t, _), _ in members)
    leaves = tuple(leaf for (_, leaf), _ in members)
    groups: dict[int, set[str]] = {}
    for item, (_, theme) in zip(ids, members):
        if theme is not None:
            groups.setdefault(theme, set()).add(item)
    return Session(sid, ids, titles, leaves, tuple(frozenset(g) for g in groups.values()))


def exact_f1(predictions, sessions) -> float:
    preds = [[frozenset(b) for b in p.bundles] for p in predictions]
    return compute_bundle_metrics(preds, [list(s.bundles) for s in sessions])["exact_f1"]


def test_bbpr_recovers_planted_bundles():
    rng = random.Random(0)
    train, valid, test = ([planted_session(f"{split}{k}", rng) for k in range(n)]
                          for split, n in (("train", 40), ("valid", 10), ("test", 12)))
    torch.manual_seed(0)
    model = BBPR(defaults(bbpr_calibration_sessions=40), None)
    model.fit_bundles(train)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for epoch in range(15):
        batch_rng = random.Random(epoch)
        for start in range(0, len(train), 8):
            optimizer.zero_grad()
            model.session_loss(train[start:start + 8], batch_rng).backward()
            optimizer.step()
    model.tune(valid)
    predictions = model.generate_bundles(without_labels(test))
    whole = [type(p)(p.session_id, [s.item_ids]) for p, s in zip(predictions, test)]
    assert exact_f1(whole, test) == 0.0  # the floor: no session is one bundle
    assert exact_f1(predictions, test) >= 0.8, [p.bundles for p in predictions]


def test_leaf_affinity_leaves_a_training_session_out_of_its_own_counts():
    camera = Session("a", ("1", "2", "3"), ("camera", "battery", "lamp"), ("Cameras", "Batteries", "Lamps"),
                     (frozenset({"1", "2"}),))
    other = Session("b", ("4", "5"), ("camera", "battery"), ("Cameras", "Batteries"), (frozenset({"4", "5"}),))
    affinity = bb.LeafAffinity(smoothing=1.0).fit([camera, other])
    unseen = Session("t", ("7", "8", "9"), camera.titles, camera.categories)
    full, own = affinity.matrix(unseen), affinity.matrix(camera)
    assert full[0, 1] > own[0, 1] > 0 > full[0, 2]  # together twice; once without session "a" itself
    assert own[0, 2] == pytest.approx(0.0, abs=0.5) and own[0, 2] > full[0, 2]  # apart only in "a"
