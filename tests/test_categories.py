"""Title -> category predictors: the interface, the registry, and robustness to model numbers."""

from __future__ import annotations

import pytest

import recbole_bundlellm  # noqa: F401  (numpy-2 patches before recbole)
from recbole_bundlellm.data import (
    CATEGORY_PREDICTORS,
    DEFAULT_CATEGORY_PREDICTOR,
    CategoryPredictor,
    DataError,
)
from recbole_bundlellm.data.category_predictors import (
    LinearTitlePredictor,
    NearestTitlePredictor,
    check_category_predictor,
    holdout_accuracy,
    make_category_predictor,
    title_text,
)

BRANDS = ("Acme", "Bolt", "Core", "Dyna", "Echo", "Flux", "Giga", "Hexa")
# Two category words each: few enough that a shared model number outweighs them for TF-IDF.
CATEGORY_WORDS = {
    ("Electronics", "Accessories", "Cables"): "usb cable",
    ("Electronics", "Accessories", "Chargers"): "wall charger",
    ("Electronics", "Audio", "Headphones"): "wireless headphones",
}


def model_number_titles() -> tuple[list[str], list[tuple[str, ...]], list[str], list[tuple[str, ...]]]:
    """Training titles "<Brand> <category words> model <number>" (every brand in every category,
    each with its own number) and test titles whose number is that of the same brand's item
    in *another* category."""
    titles, paths, number = [], [], {}
    n = 100
    for path, words in CATEGORY_WORDS.items():
        for brand in BRANDS:
            n += 7
            titles.append(f"{brand} {words} model {n}")
            paths.append(path)
            number[brand, path] = n
    cats = list(CATEGORY_WORDS)
    tests, truth = [], []
    for brand in BRANDS:
        for k, path in enumerate(cats):
            other = cats[(k + 1) % len(cats)]
            tests.append(f"{brand} {CATEGORY_WORDS[path]} model {number[brand, other]}")
            truth.append(path)
    return titles, paths, tests, truth


def test_linear_predictor_ignores_model_numbers():
    titles, paths, tests, truth = model_number_titles()
    nearest = NearestTitlePredictor().fit(titles, paths).predict(tests)
    linear = LinearTitlePredictor().fit(titles, paths).predict(tests)
    # The nearest neighbour follows the shared (rare, high-IDF) model number every time ...
    assert all(p != t for p, t in zip(nearest, truth))
    # ... the linear predictor reads the category words.
    assert linear == truth


def test_registry_and_default():
    assert list(CATEGORY_PREDICTORS) == ["linear", "nearest"]
    assert DEFAULT_CATEGORY_PREDICTOR == "linear"
    for name, cls in CATEGORY_PREDICTORS.items():
        assert issubclass(cls, CategoryPredictor) and cls.name == name and cls.description
        assert type(make_category_predictor(name)) is cls
    assert isinstance(make_category_predictor(), LinearTitlePredictor)
    with pytest.raises(DataError, match="unknown category predictor 'knn'; expected one of linear, nearest"):
        check_category_predictor("knn")
    with pytest.raises(DataError, match="unknown category predictor"):
        make_category_predictor("knn")


@pytest.mark.parametrize("name", sorted(CATEGORY_PREDICTORS))
def test_interface_contract(name):
    model = make_category_predictor(name)
    with pytest.raises(RuntimeError, match="before fit"):
        model.predict(["a title"])
    with pytest.raises(ValueError):
        model.fit(["a", "b"], [("X",)])
    with pytest.raises(ValueError):
        model.fit([], [])
    assert model.fit(["silk tie", "cotton shirt"], [("Men", "Ties"), ("Men", "Shirts")]) is model
    assert model.predict([]) == []
    assert model.predict(["striped silk tie"]) == [("Men", "Ties")]


def test_linear_predictor_is_deterministic():
    titles, paths, tests, _ = model_number_titles()
    a = LinearTitlePredictor().fit(titles, paths).predict(tests + titles)
    b = LinearTitlePredictor().fit(list(titles), list(paths)).predict(tests + titles)
    assert a == b


def test_linear_predictor_single_class_and_shared_leaves():
    single = LinearTitlePredictor().fit(["red tie", "blue tie"], [("Men", "Ties")] * 2)
    assert single.predict(["anything", "zzz"]) == [("Men", "Ties")] * 2
    # "Shirts" under two parents: the leaf classifier picks the leaf, the path classifier the parent.
    titles = ["mens oxford shirt", "mens flannel shirt", "womens silk blouse shirt",
              "womens lace blouse shirt", "leather belt", "canvas belt"]
    paths = [("Men", "Shirts"), ("Men", "Shirts"), ("Women", "Shirts"), ("Women", "Shirts"),
             ("Men", "Belts"), ("Men", "Belts")]
    model = LinearTitlePredictor().fit(titles, paths)
    assert model.predict(["mens denim shirt", "womens chiffon blouse shirt", "suede belt"]) == [
        ("Men", "Shirts"), ("Women", "Shirts"), ("Men", "Belts")
    ]


def test_title_text_blanks_digits_and_accents():
    assert title_text("Café Nestlé 12oz XR-500B") == "cafe nestle  oz xr- b"
    assert title_text("x²") == "x "  # NFKD turns the superscript into a digit, then it is blanked


def test_holdout_accuracy_uses_the_named_predictor():
    titles, paths, _, _ = model_number_titles()
    linear = holdout_accuracy(titles, paths, seed=0)
    assert linear == holdout_accuracy(titles, paths, seed=0, predictor="linear")
    assert linear["n_heldout"] == 5 and linear["n_fit"] == 19
    assert linear["leaf_accuracy"] == 1.0
    assert holdout_accuracy(titles[:1], paths[:1], seed=0)["leaf_accuracy"] is None
