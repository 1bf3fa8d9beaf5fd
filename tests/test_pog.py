"""POG: the decoder's targets and masks on hand-made sessions, settings errors, and recovery of
planted bundles on a tiny hand-built dataset (clearly above the whole-session floor)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import yaml

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.evaluation.bundle_metrics import compute_bundle_metrics
from recbole_bundlellm.models.baselines import pog
from recbole_bundlellm.models.base import without_labels
from recbole_bundlellm.models.baselines.pog import POG, Decoding, allowed, target_sequence, training_bundles
from recbole_bundlellm.settings import SettingsError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODELS = Path(pog.__file__).parent




def defaults(**overrides) -> dict:
    """NeuralBundle.yaml + POG.yaml as a config dict (so the tests also check they hold every key)."""
    config = {"seed": 0}
    for name in ("NeuralBundle.yaml", "POG.yaml"):
        config.update(yaml.safe_load((MODELS / name).read_text(encoding="utf-8")))
    return {**config, **overrides}


# Planted structure: each bundle joins two complementary leaves; the other leaves are never bundled.
PAIRS = (("Cameras", "Batteries"), ("Tea", "Kettles"), ("Laptops", "Mice"))
NOISE = ("Flash Drives", "Books", "Socks")
NOUNS = {"Cameras": "camera body", "Batteries": "battery charger", "Tea": "green tea bags",
         "Kettles": "steel kettle", "Laptops": "notebook laptop", "Mice": "wireless mouse",
         "Flash Drives": "usb flash drive", "Books": "paperback novel", "Socks": "wool socks"}
BRANDS = ("acme", "zenith", "orbit", "nova", "delta", "lumen", "vertex", "apex")


def planted_session(sid: str, rng: random.Random, with_bundles: bool = True) -> Session:
    """One or two planted pairs plus one or two never-bundled items, shuffled; fresh item ids."""
    pairs = rng.sample(PAIRS, rng.choice((1, 2)))
    leaves = [leaf for pair in pairs for leaf in pair] + rng.sample(NOISE, rng.choice((1, 2)))
    rng.shuffle(leaves)
    ids = tuple(f"{sid}-{k}" for k in range(len(leaves)))
    titles = tuple(f"{rng.choice(BRANDS)} {NOUNS[leaf]} model {rng.randint(1, 99)}" for leaf in leaves)
    bundles = tuple(frozenset(ids[leaves.index(leaf)] for leaf in pair) for pair in pairs)
    return Session(sid, ids, titles, tuple(leaves), bundles if with_bundles else ())


def planted(n: int, seed: int, prefix: str) -> list[Session]:
    rng = random.Random(seed)
    return [planted_session(f"{prefix}{k}", rng) for k in range(n)]


def test_training_bundles_are_disjoint_in_first_item_order():
    ids = tuple("abcdef")
    s = Session("s", ids, ids, (), (frozenset("ef"), frozenset("bd"), frozenset("bce"), frozenset("ac")))
    # By first item: ac(0,2), bce(1,2,4) loses c, bd(1,3) loses b (one left: dropped), ef(4,5) loses e.
    assert training_bundles(s) == [[0, 2], [1, 4]]
    assert target_sequence([[0, 2], [1, 4]], n_slots=7) == [0, 2, 7, 1, 4, 7, 8]


def test_masks_allow_end_after_two_items_and_stop_between_bundles():
    assert allowed(3, 4, set(), 0) == [True, True, True, False, False, True]
    assert allowed(3, 4, {1}, 1) == [True, False, True, False, False, False]
    assert allowed(3, 4, {0, 1}, 2) == [False, False, True, False, True, False]


def test_bad_settings_are_one_line_errors():
    for key, value in (("pog_heads", 3), ("pog_d_model", 0), ("pog_fallback", "pair"), ("pog_dropout", 1.5),
                       ("pog_tune_end_biases", []), ("pog_tune_fallbacks", ["whole", "best"]),
                       ("pog_train_categories", "raw")):
        with pytest.raises(SettingsError):
            POG(defaults(**{key: value}), None)
    with pytest.raises(SettingsError, match="pog_fallback"):
        Decoding(fallback="pair")


def test_training_categories_can_be_predicted_out_of_fold():
    sessions = planted(20, 8, "tr")
    model = POG(defaults(pog_train_categories="predicted"), None)
    model.fit_bundles(sessions)
    trained = model.training_sessions(list(sessions))
    assert [s.session_id for s in trained] == [s.session_id for s in sessions]
    assert all(a in model._predicted for a in trained)  # the re-predicted copies are what it learns from
    assert [s.bundles for s in trained] == [s.bundles for s in sessions]


def train(model: POG, sessions: list[Session], epochs: int, batch: int = 16) -> list[float]:
    """The trainer's loop in miniature (NeuralBundleTrainer runs the same calls)."""
    torch.manual_seed(0)
    model.fit_bundles(sessions)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    losses = []
    for epoch in range(epochs):
        model.train()
        rng = random.Random(epoch)
        order = model.training_sessions(sessions)
        rng.shuffle(order)
        total = 0.0
        for start in range(0, len(order), batch):
            optimizer.zero_grad()
            loss = model.session_loss(order[start:start + batch], rng)
            loss.backward()
            optimizer.step()
            total += loss.item()
        losses.append(total)
    return losses


def exact_f1(model: POG, sessions: list[Session]) -> tuple[float, float]:
    preds = model.generate_bundles(without_labels(sessions))
    m = compute_bundle_metrics([p.bundles for p in preds], [list(s.bundles) for s in sessions],
                               [s.item_ids for s in sessions])
    return m["exact_f1"], m["whole_session_share"]


def test_pog_recovers_planted_bundles_well_above_the_whole_session_floor():
    train_set, valid, test = planted(80, 1, "tr"), planted(20, 2, "va"), planted(30, 3, "te")
    model = POG(defaults(), None)
    losses = train(model, train_set, epochs=10)
    assert losses[-1] < losses[0] / 3
    model.tune(valid)
    f1, whole = exact_f1(model, test)
    floor = compute_bundle_metrics([[frozenset(s.item_ids)] for s in test], [list(s.bundles) for s in test])
    assert floor["exact_f1"] == 0.0  # every session holds never-bundled items
    assert f1 >= 0.8 and whole == 0.0, (f1, whole)
    for s, p in zip(test, model.generate_bundles(without_labels(test))):  # disjoint bundles of the session
        members = [i for b in p.bundles for i in b]
        assert len(members) == len(set(members)) and set(members) <= set(s.item_ids)
        assert all(len(b) >= 2 for b in p.bundles)


def test_tune_keeps_the_best_decoding_and_the_fallback_applies():
    train_set = planted(30, 4, "tr")
    model = POG(defaults(pog_tune_end_biases=[0.0], pog_tune_stop_biases=[0.0, 50.0]), None)
    train(model, train_set, epochs=3)
    chosen = model.tune(planted(10, 5, "va"))
    assert chosen is not None and model.run_info["tuned"] is True
    assert chosen["decoding"]["stop_bias"] == 0.0  # 50 decodes nothing: never better, and later in the grid
    # A huge STOP bias decodes no bundle at all: the fallback decides what the session gets.
    s = planted(1, 6, "te")[0]
    model.decoding = Decoding(0.0, 50.0, "whole")
    assert model.generate_bundles([s])[0].bundles == [s.item_ids]
    model.decoding = Decoding(0.0, 50.0, "none")
    assert model.generate_bundles([s])[0].bundles == [] and model.generate_bundles([s])[0].failure
    assert POG(defaults(pog_tune=False), None).tune(planted(3, 7, "va")) is None


def test_yaml_documents_every_setting():
    lines = [line for line in (MODELS / "POG.yaml").read_text(encoding="utf-8").splitlines()
             if line and not line.startswith("#")]
    assert all("# (" in line for line in lines), [line for line in lines if "# (" not in line]
