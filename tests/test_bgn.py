"""BGN: teacher-forcing tables, stopping rules, settings errors, and recovery of planted bundles
on a hand-built dataset (clearly above the whole-session floor)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
import yaml

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.evaluation.bundle_metrics import compute_bundle_metrics
from recbole_bundlellm.models.baselines import bgn as bgn_module
from recbole_bundlellm.models.baselines.bgn import BGN, END, Decoded, step_masks, stop_early, target_sequence
from recbole_bundlellm.settings import SettingsError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODELS = Path(bgn_module.__file__).parent


def defaults(**overrides) -> dict:
    """NeuralBundle.yaml + BGN.yaml as a config dict (so the tests also check they hold every key)."""
    config = {"seed": 0}
    for name in ("NeuralBundle.yaml", "BGN.yaml"):
        config.update(yaml.safe_load((MODELS / name).read_text(encoding="utf-8")))
    return {**config, **overrides}


#: Planted bundles (kinds that always come together) and distractors (kinds in no bundle). Each
#: kind: a category and title words; a session's items get a random brand, so titles vary.
BUNDLE_KINDS = (
    (("Cameras", "digital camera body"), ("Camera Batteries", "camera battery pack")),
    (("Tea", "green tea bags"), ("Kettles", "electric tea kettle")),
    (("Phones", "smartphone unlocked"), ("Phone Cases", "smartphone case cover"),
     ("Screen Protectors", "tempered glass screen protector")),
)
DISTRACTORS = (("Flash Drives", "usb flash drive"), ("Lamps", "led desk lamp"), ("Headphones", "wireless headphones"),
               ("Mice", "optical mouse"))
BRANDS = ("acme", "zenith", "orbit", "nova", "lumen", "vertex", "pico", "delta")


def planted_session(sid: str, rng: random.Random, labelled: bool = True) -> Session:
    """One or two planted bundles and one or two distractors, shuffled; ids unique to the session."""
    kinds = rng.sample(range(len(BUNDLE_KINDS)), rng.choice((1, 2)))
    members = [(k, kind) for k in kinds for kind in BUNDLE_KINDS[k]]
    members += [(None, kind) for kind in rng.sample(DISTRACTORS, rng.choice((1, 2)))]
    rng.shuffle(members)
    ids = tuple(f"{sid}-{i}" for i in range(len(members)))
    titles = tuple(f"{rng.choice(BRANDS)} {words} {rng.choice(BRANDS)}" for _, (_, words) in members)
    bundles = tuple(frozenset(i for i, (k, _) in zip(ids, members) if k == g) for g in kinds) if labelled else ()
    return Session(sid, ids, titles, tuple(c for _, (c, _) in members), bundles)


def planted(count: int, seed: int) -> list[Session]:
    rng = random.Random(seed)
    return [planted_session(f"s{seed}-{k}", rng) for k in range(count)]


def trained_model(train: list[Session], epochs: int = 25, **overrides) -> BGN:
    """Fit as NeuralBundleTrainer does (featurizer, layers, Adam over session batches), quickly."""
    torch.manual_seed(0)
    model = BGN(defaults(**overrides), None)
    model.fit_bundles(train)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    rng = random.Random(0)
    model.train()
    for _ in range(epochs):
        order = list(train)
        rng.shuffle(order)
        for start in range(0, len(order), 16):
            optimizer.zero_grad()
            model.session_loss(order[start:start + 16], rng).backward()
            optimizer.step()
    return model.eval()


def test_targets_and_teacher_forcing_tables():
    s = Session("s", tuple("abcde"), tuple("abcde"), (), (frozenset("db"), frozenset("ace"), frozenset("a")))
    assert target_sequence(s) == [(0, 2, 4), (1, 3)]  # by first item; single items are no bundles
    targets, allowed, covered, current, lengths = step_masks(5, target_sequence(s))
    # a c e END | b d END | END (stop)
    assert targets == [1, 3, 5, END, 2, 4, END, END]
    assert lengths == [0, 1, 2, 3, 0, 1, 2, 0]
    assert not allowed[0][END] and not allowed[1][END] and allowed[2][END]  # no stop before a bundle, no 1-item bundle
    assert allowed[4][END] and allowed[7][END]  # END before a later bundle means "no more bundles"
    assert allowed[2][1:] == [False, False, False, True, True]  # inside a bundle positions rise (after a, c)
    assert covered[4] == [1.0, 0.0, 1.0, 0.0, 1.0] and current[2] == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert all(ok[t] for ok, t in zip(allowed, targets))  # every target is an allowed choice


def test_stop_early_keeps_the_first_bundle_and_stops_on_end_or_threshold():
    decoded = [Decoded((0, 1), -9.0, None), Decoded((2, 3), -1.0, math.log(0.1)), Decoded((4, 5), -2.0, math.log(0.6))]
    assert [d.items for d in stop_early(decoded, 0.5, -math.inf)] == [(0, 1), (2, 3)]  # END wins before the third
    assert [d.items for d in stop_early(decoded, 1.0, -math.inf)] == [(0, 1), (2, 3), (4, 5)]
    assert [d.items for d in stop_early(decoded, 1.0, -1.5)] == [(0, 1), (2, 3)]  # the third scores below
    assert [d.items for d in stop_early(decoded, 1.0, -0.5)] == [(0, 1)]  # the first is kept below the threshold
    assert stop_early([], 0.5, 0.0) == []


@pytest.mark.parametrize("key, value, message", [
    ("bgn_beam_size", 0, "bgn_beam_size"), ("bgn_hidden", "big", "bgn_hidden"), ("bgn_dropout", 1.5, "bgn_dropout"),
    ("bgn_diversity", -1, "bgn_diversity"), ("bgn_threshold", "low", "threshold"),
    ("bgn_tune_thresholds", [], "bgn_tune"), ("bgn_stop_probability", 0, "bgn_stop_probability"),
    ("bgn_tune_stop_probabilities", [1.5], "bgn_tune_stop_probabilities"), ("bgn_folds", 0, "bgn_folds"),
])
def test_bad_settings_are_clear_errors(key, value, message):
    with pytest.raises(SettingsError, match=message):
        BGN(defaults(**{key: value}), None)


def test_category_counts_of_a_training_session_are_out_of_fold():
    """A category pair seen together in one training session only: that session reads the prior
    (its own fold's counts leave it out), a new session reads the count."""
    rng = random.Random(0)
    train = [planted_session(f"t{k}", rng) for k in range(6)]
    unique = Session("u", ("a", "b", "c"), ("red wool scarf", "red wool hat", "blue jeans"),
                     ("Scarves", "Hats", "Jeans"), (frozenset("ab"),))
    model = BGN(defaults(bgn_folds=2), None)
    model.fit_bundles([unique, *train])
    own_rates, own_pairs = model.category_counts(unique)
    new_rates, new_pairs = model.category_counts(Session("v", ("d", "e"), ("wool scarf", "wool hat"), ("Scarves", "Hats")))
    assert own_pairs[0, 1, 1] == 0 and new_pairs[0, 1, 1] == pytest.approx(math.log1p(1))
    assert new_pairs[0, 1, 0] > own_pairs[0, 1, 0] and new_rates[0] > own_rates[0]
    assert own_pairs.shape == (3, 3, 2) and torch.equal(own_pairs[..., 0], own_pairs[..., 0].T)


def test_yaml_documents_every_setting():
    lines = [line for line in (MODELS / "BGN.yaml").read_text(encoding="utf-8").splitlines()
             if line and not line.startswith("#")]
    assert lines and all(line.startswith("bgn_") and "# (" in line for line in lines), lines


def test_bgn_recovers_planted_bundles_far_above_the_whole_session_floor():
    model = trained_model(planted(60, seed=1))
    valid, test = planted(20, seed=2), planted(30, seed=3)
    chosen = model.tune(valid)
    assert chosen["valid_exact_f1"] > 0.8
    hidden = [Session(s.session_id, s.item_ids, s.titles, s.categories) for s in test]  # labels removed
    predictions = model.generate_bundles(hidden)
    truths = [list(s.bundles) for s in test]
    ours = compute_bundle_metrics([p.bundles for p in predictions], truths)
    floor = compute_bundle_metrics([[s.item_ids] for s in test], truths)
    assert floor["exact_f1"] == 0.0  # every session has a distractor
    assert ours["exact_f1"] > 0.8, ours
    for p, s in zip(predictions, test):  # bundles of the session's own items, no repeats
        members = [i for b in p.bundles for i in b]
        assert set(members) <= set(s.item_ids) and all(len(b) >= 2 for b in p.bundles)


def test_bundle_order_is_by_first_item_unless_shuffled():
    bundles = [(0, 1), (2, 3), (4, 5, 6)]
    assert BGN(defaults(), None).bundle_order(bundles, random.Random(0)) == bundles
    shuffled = BGN(defaults(bgn_shuffle_bundles=True), None)
    orders = {tuple(shuffled.bundle_order(bundles, random.Random(seed))) for seed in range(10)}
    assert len(orders) > 1 and all(sorted(o) == bundles for o in orders)
