"""Item categories without leaks: raw ones for training-bundle items, predicted ones otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from recbole_bundlellm.data.categories import (
    CategoryPath,
    choose_path,
    parse_category_paths,
)
from recbole_bundlellm.data.category_predictors import (
    DEFAULT_CATEGORY_PREDICTOR,
    holdout_accuracy,
    make_category_predictor,
)
from recbole_bundlellm.data.raw import DataError, RawDomain

#: The rule of :func:`assign_categories`, in words, for the dataset card.
CATEGORY_RULE = (
    "raw category (longest path, first on ties; leaf = last name) only for items "
    "in deduplicated bundles of training sessions; all other items predicted from "
    "the title"
)


def raw_category_path(raw: RawDomain, item: int) -> CategoryPath | None:
    """The chosen raw path of ``item`` (``None`` when absent or ``[[]]``)."""
    text = raw.categories.get(item)
    if text is None:
        return None
    try:
        return choose_path(parse_category_paths(text))
    except ValueError as err:
        line = raw.category_lines.get(item, "?")
        raise DataError(f"item_categories.csv: line {line}: {err}") from None


@dataclass
class CategoryAssignment:
    """Each item's category path, where it came from ("raw" or "predicted"), and card stats."""

    paths: dict[int, CategoryPath]
    source: dict[int, str]
    stats: dict


def assign_categories(
    raw: RawDomain,
    items: Sequence[int],
    titles: dict[int, str],
    train_bundle_items: set[int],
    seed: int,
    *,
    predictor: str = DEFAULT_CATEGORY_PREDICTOR,
) -> CategoryAssignment:
    """Raw category for training-bundle items only; every other item gets a predicted one.

    The raw category file covers exactly the items that lie in some bundle, so using it for
    any other item would leak that item's bundle membership. ``predictor`` names one of
    :data:`~recbole_bundlellm.data.category_predictors.CATEGORY_PREDICTORS`; ``seed`` draws
    its hold-out for the card.
    """
    model = make_category_predictor(predictor)
    allowed: dict[int, CategoryPath] = {}
    for item in sorted(train_bundle_items):
        path = raw_category_path(raw, item)
        if path is not None:
            allowed[item] = path
    if not allowed:
        raise DataError(f"{raw.domain}: no training-bundle item has a category to learn from")
    fit_items = sorted(allowed)
    fit_titles = [titles[i] for i in fit_items]
    fit_paths = [allowed[i] for i in fit_items]
    model.fit(fit_titles, fit_paths)
    to_predict = [i for i in items if i not in allowed]
    predicted = dict(zip(to_predict, model.predict([titles[i] for i in to_predict])))
    paths = {i: allowed.get(i) or predicted[i] for i in items}
    source = {i: "raw" if i in allowed else "predicted" for i in items}
    stats = {
        "items_raw_category": len(allowed),
        "items_predicted_category": len(to_predict),
        "training_bundle_items_without_raw_category": len(train_bundle_items) - len(allowed),
        "distinct_leaves": len({p[-1] for p in paths.values()}),
        "category_predictor": model.name,
        "predictor": model.description,
        "predictor_holdout": {
            "note": "fit on a seeded 80 % of training-bundle items, scored on the other 20 %",
            **holdout_accuracy(fit_titles, fit_paths, seed=seed, predictor=predictor),
        },
    }
    return CategoryAssignment(paths=paths, source=source, stats=stats)
