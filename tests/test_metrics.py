"""Bundle metrics: hand-computed cases, the floor table of the metrics note on the real
Electronic AICL test split, and the RecBole registration."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from recbole_bundlellm.evaluation import METRIC_KEYS, compute_bundle_metrics, format_table
from recbole_bundlellm.evaluation.bundle_metrics import normalize_predictions

# --------------------------------------------------------------------------------------------
# Hand-computed case (worked out on paper; fractions kept visible).
#
# A: truth [{1,2,3}, {4,5}]; predictions {1,2} (strict subset of g1), {2,3} (a second one
#    inside g1), {4,5} (exact match of g2), {4,5} again (duplicate, counts once), {6} (size 1,
#    dropped), {1,2,6} (no hit)  ->  |P| = 4, hits 3 (coverage 2/3, 2/3, 1), distinct 2/2,
#    exact matches 1: P 1/4, R 1/2, F1 1/3; best Jaccard g1 2/3, g2 1.
# B: failed (unparsable), truth [{7,8}]: 0 everywhere, best Jaccard 0.
# C: truth [{10,11,12}, {11,13}]; predictions {10,11,12} (exact), {11} (dropped), {11,14}
#    -> |P| = 2, 1 hit (coverage 1), distinct 1/2, exact P 1/2, R 1/2, F1 1/2;
#    best Jaccard g1 1, g2 max(1/4, 1/3) = 1/3.
# D: truth [{1,2,3,4}, {2,3,5}]; prediction {2,3}, inside both: g* is the FIRST g, so the
#    coverage is 2/4 (not 2/3); distinct 1/2; no exact match; best Jaccard 2/4, 2/3.
# Answer shape: no session is one bundle of all its items (whole-session share 0); predicted
# bundles per answered session A 4, C 2, D 1; ground-truth bundles 2, 1, 2, 2.
# --------------------------------------------------------------------------------------------
PREDICTIONS = [
    [[1, 2], [2, 3], [4, 5], [5, 4], [6], [1, 2, 6]],
    None,
    [[12, 11, 10], [11], [11, 14]],
    [[2, 3]],
]
TRUTHS = [
    [[1, 2, 3], [4, 5]],
    [[7, 8]],
    [[10, 11, 12], [11, 13]],
    [[1, 2, 3, 4], [2, 3, 5]],
]
ITEMS = [
    frozenset({1, 2, 3, 4, 5, 6}),
    frozenset({7, 8}),
    frozenset({10, 11, 12, 13, 14}),
    frozenset({1, 2, 3, 4, 5}),
]
EXPECTED = {
    "bundle_precision": (3 / 4 + 1 / 2 + 1) / 3,
    "bundle_recall": (3 / 2 + 1 / 2 + 1 / 2) / 3,
    "bundle_precision_strict": (3 / 4 + 0 + 1 / 2 + 1) / 4,
    "bundle_recall_strict": (3 / 2 + 0 + 1 / 2 + 1 / 2) / 4,
    "bundle_coverage": (2 / 3 + 2 / 3 + 1 + 1 + 2 / 4) / 5,
    "failure_rate": 1 / 4,
    "whole_session_share": 0 / 4,
    "predicted_bundles": (4 + 2 + 1) / 3,
    "true_bundles": (2 + 1 + 2 + 2) / 4,
    "distinct_recall": (1 + 0 + 1 / 2 + 1 / 2) / 4,
    "exact_precision": (1 / 4 + 0 + 1 / 2 + 0) / 4,
    "exact_recall": (1 / 2 + 0 + 1 / 2 + 0) / 4,
    "exact_f1": (1 / 3 + 0 + 1 / 2 + 0) / 4,
    "best_jaccard": (2 / 3 + 1 + 0 + 1 + 1 / 3 + 2 / 4 + 2 / 3) / 7,
    "n_sessions": 4.0,
    "n_failed": 1.0,
}


def test_hand_computed_case():
    result = compute_bundle_metrics(PREDICTIONS, TRUTHS, ITEMS)
    assert set(result) == set(EXPECTED)
    assert set(METRIC_KEYS) | {"n_sessions", "n_failed"} == set(result)
    for key, value in EXPECTED.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key
        assert isinstance(result[key], float)


def test_without_items_only_the_whole_session_share_is_missing():
    with_items = compute_bundle_metrics(PREDICTIONS, TRUTHS, ITEMS)
    without = compute_bundle_metrics(PREDICTIONS, TRUTHS)
    assert set(with_items) - set(without) == {"whole_session_share"}
    assert all(without[key] == with_items[key] for key in without)


# --------------------------------------------------------------------------------------------
# Answer shape, hand-computed.
#
# S1 items {1,2,3}: one bundle {3,2,1} -> whole.
# S2 items {4,5}: failed -> not whole, still in the denominator; no predicted-bundle count.
# S3 items {6,7,8,9}: {6,7}, {8,9} -> two bundles, not whole.
# S4 items {10,11,12}: {10,11,12}, its duplicate, {10} (dropped) -> one bundle left: whole.
# S5 items {13,14,15}: {13,14} -> one bundle, but not every item: not whole.
# Whole 2/5; predicted bundles (1 + 2 + 1 + 1) / 4 answered; true bundles (1+1+2+1+1) / 5.
# --------------------------------------------------------------------------------------------
SHAPE_PREDICTIONS = [
    [[3, 2, 1]],
    None,
    [[6, 7], [8, 9]],
    [[10, 11, 12], [12, 11, 10], [10]],
    [[13, 14]],
]
SHAPE_TRUTHS = [
    [[1, 2, 3]],
    [[4, 5]],
    [[6, 7], [8, 9]],
    [[10, 11]],
    [[13, 14]],
]
SHAPE_ITEMS = [
    frozenset({1, 2, 3}),
    frozenset({4, 5}),
    frozenset({6, 7, 8, 9}),
    frozenset({10, 11, 12}),
    frozenset({13, 14, 15}),
]
SHAPE_EXPECTED = {
    "whole_session_share": 2 / 5,
    "predicted_bundles": (1 + 2 + 1 + 1) / 4,
    "true_bundles": (1 + 1 + 2 + 1 + 1) / 5,
}


def test_answer_shape_hand_computed():
    result = compute_bundle_metrics(SHAPE_PREDICTIONS, SHAPE_TRUTHS, SHAPE_ITEMS)
    for key, value in SHAPE_EXPECTED.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key


def test_answer_shape_single_sessions():
    def shape(pred, truth, items):
        result = compute_bundle_metrics([pred], [truth], [items])
        return result["whole_session_share"], result["predicted_bundles"], result["true_bundles"]

    # Items given as a list (duplicates, any order) are a set.
    assert shape([[2, 1, 3]], [[1, 2], [3, 4]], [3, 1, 2, 1]) == (1.0, 1.0, 2.0)
    assert shape(None, [[1, 2]], {1, 2}) == (0.0, 0.0, 1.0)  # failed: no answered session
    assert shape([[1, 2], [3, 4]], [[1, 2], [3, 4]], {1, 2, 3, 4}) == (0.0, 2.0, 2.0)
    # A bundle holding every item plus an off-session one still lumps the session together.
    assert shape([[1, 2, 99]], [[1, 2]], {1, 2}) == (1.0, 1.0, 1.0)
    # An empty session has nothing to lump: never whole.
    assert shape([[1, 2]], [[1, 2]], frozenset()) == (0.0, 1.0, 1.0)


def test_answer_shape_with_no_session():
    result = compute_bundle_metrics([], [], [])
    assert result["whole_session_share"] == 0.0
    assert result["predicted_bundles"] == 0.0 and result["true_bundles"] == 0.0


def test_answer_shape_errors():
    with pytest.raises(ValueError, match="item sets"):
        compute_bundle_metrics([None], [[[1, 2]]], [])
    with pytest.raises(TypeError):
        compute_bundle_metrics([[[1, 2]]], [[[1, 2]]], ["12"])


def test_exact_f1_is_mean_of_session_f1_not_harmonic_of_means():
    result = compute_bundle_metrics(PREDICTIONS, TRUTHS)
    p, r = result["exact_precision"], result["exact_recall"]
    assert result["exact_f1"] != pytest.approx(2 * p * r / (p + r))


def test_recall_can_exceed_one_in_a_session():
    # Two predictions inside one g both count (the reference behaviour).
    result = compute_bundle_metrics([[[1, 2], [2, 3], [1, 3]]], [[[1, 2, 3]]])
    assert result["bundle_recall"] == pytest.approx(3.0)
    assert result["distinct_recall"] == pytest.approx(1.0)
    assert result["bundle_coverage"] == pytest.approx(2 / 3)
    assert result["exact_f1"] == 0.0


def test_sets_and_strings_items_and_order_do_not_matter():
    a = compute_bundle_metrics([[("b", "a")]], [[frozenset({"a", "b"})]])
    assert a["exact_f1"] == 1.0 and a["best_jaccard"] == 1.0


def test_session_left_with_only_small_bundles_is_failed():
    result = compute_bundle_metrics([[[1], [2], [1, 1]], []], [[[1, 2]], [[3, 4]]])
    assert result["n_failed"] == 2.0 and result["failure_rate"] == 1.0
    # No scored session: AICL means are 0.0 by definition; no hit: coverage 0.0.
    assert result["bundle_precision"] == 0.0 and result["bundle_recall"] == 0.0
    assert result["bundle_coverage"] == 0.0
    assert result["best_jaccard"] == 0.0


def test_no_hits_gives_zero_coverage():
    result = compute_bundle_metrics([[[1, 4]]], [[[1, 2, 3]]])
    assert result["bundle_coverage"] == 0.0
    assert result["bundle_precision"] == 0.0
    assert result["best_jaccard"] == pytest.approx(1 / 4)
    assert result["n_failed"] == 0.0


def test_no_sessions_gives_zeros():
    result = compute_bundle_metrics([], [], [])
    assert result["n_sessions"] == 0.0
    assert all(result[key] == 0.0 for key in METRIC_KEYS)


def test_errors():
    with pytest.raises(ValueError, match="no ground-truth"):
        compute_bundle_metrics([[[1, 2]]], [[]])
    with pytest.raises(ValueError, match="predictions"):
        compute_bundle_metrics([None], [[[1, 2]], [[3, 4]]])
    with pytest.raises(TypeError):
        compute_bundle_metrics([["ab"]], [[[1, 2]]])


def test_normalize_predictions():
    assert normalize_predictions(None) is None
    assert normalize_predictions([[1]]) is None
    assert normalize_predictions([[2, 1], [1, 2], [3]]) == [frozenset({1, 2})]


def test_format_table():
    rows = {
        "whole session": compute_bundle_metrics([[[1, 2, 3]]], [[[1, 2, 3]]]),
        "model": {"bundle_precision": 0.5},
    }
    table = format_table(rows, keys=(*METRIC_KEYS, "n_sessions"))
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[0].split()[:2] == ["model", "P"]
    assert "exact F1" in lines[0] and "failed" in lines[0]
    assert lines[2].startswith("whole session") and "1.000" in lines[2]
    assert lines[3].split()[1] == "0.500" and lines[3].split()[-1] == "-"
    assert lines[2].split()[-1] == "1"  # n_sessions as an integer
    # Computed without the session items: the whole-session column shows "-".
    cells = lines[2].split()[2:]  # after the two-word row name
    assert cells[METRIC_KEYS.index("whole_session_share")] == "-"
    assert cells.count("-") == 1


# --------------------------------------------------------------------------------------------
# The floor table of the metrics note, on the Electronic AICL test split.
# --------------------------------------------------------------------------------------------
def _load_test_split(root: Path) -> tuple[list[list[str]], list[list[frozenset[str]]]]:
    split_dir = root / "electronic" / "aicl_split"
    with open(split_dir / "sessions.csv", newline="", encoding="utf-8") as handle:
        sessions = [row for row in csv.DictReader(handle) if row["split"] == "test"]
    truth: dict[str, list[frozenset[str]]] = {}
    with open(split_dir / "bundles_dedup.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            truth.setdefault(row["aicl_session_id"], []).append(
                frozenset(row["item_asins"].split(","))
            )
    items = [row["item_asins"].split(",") for row in sessions]
    truths = [truth[row["aicl_session_id"]] for row in sessions]
    return items, truths


@pytest.fixture(scope="module")
def electronic_test(raw_data_root):
    items, truths = _load_test_split(raw_data_root)
    assert len(items) == 180
    return items, truths


def _pairs(seq: list[str]) -> list[list[str]]:
    # An odd last item stays alone, and is dropped by the metrics as a size-1 bundle.
    return [seq[i : i + 2] for i in range(0, len(seq), 2)]


# Columns: P, R, P strict, R strict, coverage, distinct R, exact F1, best Jaccard, failure rate.
FLOOR_KEYS = (
    "bundle_precision",
    "bundle_recall",
    "bundle_precision_strict",
    "bundle_recall_strict",
    "bundle_coverage",
    "distinct_recall",
    "exact_f1",
    "best_jaccard",
    "failure_rate",
)
FLOORS = {
    "whole": (0.261, 0.261, 0.261, 0.261, 1.000, 0.261, 0.261, 0.511, 0.0),
    "first_two": (0.439, 0.390, 0.439, 0.390, 0.696, 0.390, 0.174, 0.324, 0.0),
    "adjacent_pairs": (0.443, 0.862, 0.443, 0.862, 0.562, 0.563, 0.189, 0.493, 0.0),
    "random_pairs": (0.435, 0.850, 0.435, 0.850, 0.560, 0.550, 0.188, 0.490, 0.0),
}
PREDICTORS = {
    "whole": lambda items: [items],
    "first_two": lambda items: [items[:2]],
    "adjacent_pairs": _pairs,
}


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_floor_table(electronic_test, name):
    items, truths = electronic_test
    result = compute_bundle_metrics([PREDICTORS[name](s) for s in items], truths, items)
    for key, expected in zip(FLOOR_KEYS, FLOORS[name]):
        assert result[key] == pytest.approx(expected, abs=0.0015), key
    assert result["n_sessions"] == 180.0
    if name == "whole":  # the floor that is all collapse
        assert result["whole_session_share"] == 1.0 and result["predicted_bundles"] == 1.0


def test_floor_table_random_pairs(electronic_test):
    # Per seed 0..19: random.Random(seed).shuffle a copy of each session's items (sessions in
    # AICL order, one generator per seed across all sessions), then adjacent pairs.
    items, truths = electronic_test
    sums = dict.fromkeys(FLOOR_KEYS, 0.0)
    for seed in range(20):
        rng = random.Random(seed)
        predictions = []
        for session in items:
            shuffled = list(session)
            rng.shuffle(shuffled)
            predictions.append(_pairs(shuffled))
        result = compute_bundle_metrics(predictions, truths)
        for key in FLOOR_KEYS:
            sums[key] += result[key] / 20
    for key, expected in zip(FLOOR_KEYS, FLOORS["random_pairs"]):
        assert sums[key] == pytest.approx(expected, abs=0.01), key


# --------------------------------------------------------------------------------------------
# RecBole registration.
# --------------------------------------------------------------------------------------------
@pytest.fixture
def rm():
    """The RecBole side, with the bundle metrics registered the way every run gets them: by the
    built-in ``metrics`` plugin of a freshly loaded plugin host."""
    from recbole_bundlellm.evaluation import recbole_metrics
    from recbole_bundlellm.extension.host import PluginHost

    host = PluginHost()
    yield recbole_metrics
    host.close()


def _config(metrics: list[str], valid_metric: str, decimals: int = 4):
    from recbole.config import Config

    return Config(
        model="Pop",
        dataset="x",
        config_dict={
            "metrics": metrics,
            "valid_metric": valid_metric,
            "metric_decimal_place": decimals,
        },
    )


def _struct(predictions=PREDICTIONS, truths=TRUTHS, items=ITEMS):
    """A DataStruct as BundleTrainer.evaluate fills it; ``items=None`` leaves out bundle.items."""
    from recbole.evaluator.collector import DataStruct

    struct = DataStruct()
    struct.set("bundle.pred", predictions)
    struct.set("bundle.truth", truths)
    if items is not None:
        struct.set("bundle.items", items)
    return struct


def test_registry_objects_are_shared(rm):
    from recbole.config import configurator
    from recbole.evaluator import evaluator, register

    # The Config and the Evaluator read the very objects we mutate.
    assert configurator.metric_types is register.metric_types
    assert configurator.smaller_metrics is register.smaller_metrics
    assert evaluator.metrics_dict is register.metrics_dict
    for name in rm.BUNDLE_METRICS:
        key = name.lower()
        assert register.metrics_dict[key] is getattr(rm, name)
        assert register.metric_information[key][:2] == ["bundle.pred", "bundle.truth"]
        assert key in register.metric_types
    # Only the whole-session share needs the session items.
    assert [name for name in rm.BUNDLE_METRICS
            if "bundle.items" in register.metric_information[name.lower()]] == ["WholeSessionShare"]
    assert "failurerate" in register.smaller_metrics
    assert "exactf1" not in register.smaller_metrics


def test_bundle_metrics_order(rm):
    assert rm.BUNDLE_METRICS == (
        "BundlePrecision", "BundleRecall", "BundlePrecisionStrict", "BundleRecallStrict",
        "BundleCoverage", "FailureRate", "WholeSessionShare", "PredictedBundles", "TrueBundles",
        "DistinctRecall", "ExactPrecision", "ExactRecall", "ExactF1", "BestJaccard",
    )  # fmt: skip
    # Same order as the pure-Python keys.
    assert [name.lower() for name in rm.BUNDLE_METRICS] == [k.replace("_", "") for k in METRIC_KEYS]


def test_register_is_idempotent(rm):
    from recbole.evaluator import register

    before = (dict(register.metrics_dict), list(register.smaller_metrics))
    rm.register_bundle_metrics()
    rm.register_bundle_metrics()
    assert (dict(register.metrics_dict), list(register.smaller_metrics)) == before
    assert register.smaller_metrics.count("failurerate") == 1


def test_register_metric_validation(rm):
    from recbole.evaluator.base_metric import AbstractMetric
    from recbole.utils import EvaluatorType

    class NoNeed(AbstractMetric):
        metric_type = EvaluatorType.RANKING

    class Recall(AbstractMetric):  # RecBole's own "recall" is a different class
        metric_need = ["rec.topk"]
        metric_type = EvaluatorType.RANKING

        def calculate_metric(self, dataobject):
            return {}

    class BadType(AbstractMetric):
        metric_need = ["rec.topk"]
        metric_type = "ranking"

    with pytest.raises(ValueError, match="metric_need"):
        rm.register_metric(NoNeed)
    with pytest.raises(ValueError, match="already taken"):
        rm.register_metric(Recall)
    with pytest.raises(ValueError, match="EvaluatorType"):
        rm.register_metric(BadType)
    with pytest.raises(ValueError, match="class"):
        rm.register_metric(object())


def test_register_metric_new_class(rm):
    from recbole.evaluator import register
    from recbole.utils import EvaluatorType

    class PluginBundleCount(rm.BundleMetric):
        summary_key = "n_sessions"
        smaller = True

    try:
        rm.register_metric(PluginBundleCount)
        rm.register_metric(PluginBundleCount)  # same class again: fine
        assert register.metrics_dict["pluginbundlecount"] is PluginBundleCount
        assert register.metric_types["pluginbundlecount"] is EvaluatorType.RANKING
        assert register.smaller_metrics.count("pluginbundlecount") == 1
    finally:  # leave the registry as the other tests expect it
        register.metrics_dict.pop("pluginbundlecount", None)
        register.metric_information.pop("pluginbundlecount", None)
        register.metric_types.pop("pluginbundlecount", None)
        if "pluginbundlecount" in register.smaller_metrics:
            register.smaller_metrics.remove("pluginbundlecount")


def test_config_and_evaluator(rm):
    from recbole.evaluator import Collector, Evaluator
    from recbole.utils import EvaluatorType

    config = _config(["BundlePrecision", "ExactF1"], "ExactF1")
    assert config["valid_metric_bigger"] is True
    assert config["eval_type"] == EvaluatorType.RANKING
    # The collector's register now knows what our metrics need.
    assert Collector(config).register.need("bundle.pred")

    result = Evaluator(config).evaluate(_struct())
    assert list(result) == ["bundleprecision", "exactf1"]
    assert result["bundleprecision"] == round(EXPECTED["bundle_precision"], 4)
    assert result["exactf1"] == round(EXPECTED["exact_f1"], 4)


def test_all_metrics_through_evaluator_computed_once(rm, monkeypatch):
    from recbole.evaluator import Evaluator

    calls = []
    real = rm.compute_bundle_metrics

    def counting(predictions, truths, items=None):
        calls.append(1)
        return real(predictions, truths, items)

    monkeypatch.setattr(rm, "compute_bundle_metrics", counting)
    config = _config(list(rm.BUNDLE_METRICS), "ExactF1", decimals=6)
    evaluator = Evaluator(config)
    struct = _struct()
    result = evaluator.evaluate(struct)
    assert len(calls) == 1
    assert len(result) == 14
    for name, key in zip(rm.BUNDLE_METRICS, METRIC_KEYS):
        assert result[name.lower()] == round(EXPECTED[key], 6), name

    evaluator.evaluate(struct)
    assert len(calls) == 1  # cached on the DataStruct
    struct.set("bundle.pred", [[[1, 2, 3]], None, None, None])  # new data: recomputed
    again = evaluator.evaluate(struct)
    assert len(calls) == 2
    assert again["failurerate"] == 0.75
    struct.set("bundle.items", list(ITEMS))  # new items: recomputed too
    evaluator.evaluate(struct)
    assert len(calls) == 3


SHAPE_METRICS = ["WholeSessionShare", "PredictedBundles", "TrueBundles"]


def test_answer_shape_through_evaluator(rm):
    from recbole.evaluator import Evaluator

    config = _config(["ExactF1", *SHAPE_METRICS], "ExactF1", decimals=6)
    result = Evaluator(config).evaluate(_struct(SHAPE_PREDICTIONS, SHAPE_TRUTHS, SHAPE_ITEMS))
    assert list(result) == ["exactf1", "wholesessionshare", "predictedbundles", "truebundles"]
    assert rm.summary_keys(dict(result))["whole_session_share"] == round(SHAPE_EXPECTED["whole_session_share"], 6)
    assert result["predictedbundles"] == round(SHAPE_EXPECTED["predicted_bundles"], 6)
    assert result["truebundles"] == round(SHAPE_EXPECTED["true_bundles"], 6)


def test_whole_session_share_without_items_names_bundle_items(rm):
    from recbole.evaluator import Evaluator

    struct = _struct(items=None)
    # The metrics that do not need the items still work on a struct without them...
    counts = Evaluator(_config(["PredictedBundles", "TrueBundles"], "TrueBundles")).evaluate(struct)
    assert counts["truebundles"] == round(EXPECTED["true_bundles"], 4)
    # ...the whole-session share says what is missing.
    with pytest.raises(ValueError, match="bundle.items"):
        Evaluator(_config(["WholeSessionShare"], "WholeSessionShare")).evaluate(struct)


def test_failure_rate_as_valid_metric_is_smaller_better(rm):
    config = _config(["FailureRate", "BundleRecall"], "FailureRate")
    assert config["valid_metric_bigger"] is False


def test_ranking_and_value_metrics_cannot_mix(rm):
    with pytest.raises(RuntimeError):
        _config(["ExactF1", "RMSE"], "ExactF1")


def test_one_session_is_scored_into_one_record_that_the_table_averages():
    from recbole_bundlellm.evaluation.bundle_metrics import aggregate, compute_bundle_metrics, score_session

    hit = score_session([[1, 2], [3, 4, 5]], [[1, 2, 6], [3, 4, 5]], items=[1, 2, 3, 4, 5, 6])
    assert (hit.failed, hit.predicted_bundles, hit.true_bundles, hit.whole) == (False, 2, 2, False)
    assert (hit.precision, hit.recall, hit.exact_precision, hit.exact_recall) == (1.0, 1.0, 0.5, 0.5)
    assert hit.hit_coverages == (2 / 3, 1.0) and hit.best_jaccards == (2 / 3, 1.0)
    failed = score_session([[7]], [[1, 2]], items=[1, 2])
    assert failed.failed and failed.best_jaccards == (0.0,) and failed.whole is False
    table = compute_bundle_metrics([[[1, 2], [3, 4, 5]], [[7]]], [[[1, 2, 6], [3, 4, 5]], [[1, 2]]],
                                   [[1, 2, 3, 4, 5, 6], [1, 2]])
    assert table == aggregate([hit, failed])
    assert table["bundle_precision"] == 1.0 and table["bundle_precision_strict"] == 0.5
