"""Title -> category path predictors, chosen by name, and their hold-out accuracy.

Items outside training bundles may not use their raw category (that would leak bundle
membership), so preparation predicts one from the title. Every predictor implements
:class:`CategoryPredictor` (``fit(titles, paths)`` then ``predict(titles)``); a new one is a
subclass added to :data:`CATEGORY_PREDICTORS`.
"""

from __future__ import annotations

import re
import unicodedata
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from recbole_bundlellm.data.categories import CategoryPath
from recbole_bundlellm.data.raw import DataError

if TYPE_CHECKING:  # scikit-learn is heavy: imported only where a predictor is fit
    from scipy.sparse import spmatrix
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion
    from sklearn.svm import LinearSVC


class CategoryPredictor(ABC):
    """Learns title -> category path from items whose raw category may be used."""

    #: The name preparation is asked for (``prepare(..., category_predictor=name)``).
    name: ClassVar[str]
    #: One line for the dataset card.
    description: ClassVar[str]

    @abstractmethod
    def fit(self, titles: Sequence[str], paths: Sequence[CategoryPath]) -> CategoryPredictor:
        """Fit on parallel sequences of titles and their (non-empty) category paths."""

    @abstractmethod
    def predict(self, titles: Sequence[str]) -> list[CategoryPath]:
        """Predicted category path for each title (``RuntimeError`` before :meth:`fit`)."""


def _check_fit_input(titles: Sequence[str], paths: Sequence[CategoryPath]) -> None:
    if len(titles) != len(paths) or not titles:
        raise ValueError("need the same, non-zero number of titles and paths")


class NearestTitlePredictor(CategoryPredictor):
    """Nearest neighbour (cosine over TF-IDF of titles) from a title to a category path.

    An item gets the path of its most similar training title. Titles sharing no term with
    any training title get the most frequent training path. Rare tokens (model numbers,
    sizes) carry the highest IDF, so they often decide the neighbour; kept for comparison.
    """

    name = "nearest"
    description = (
        "TF-IDF (word unigrams) of titles, cosine 1-nearest neighbour, fit on training-bundle items"
    )

    def __init__(self) -> None:
        self._vectorizer: TfidfVectorizer | None = None
        self._matrix: spmatrix | None = None
        self._paths: list[CategoryPath] = []
        self._fallback: CategoryPath | None = None

    def fit(self, titles: Sequence[str], paths: Sequence[CategoryPath]) -> NearestTitlePredictor:
        from sklearn.feature_extraction.text import (
            TfidfVectorizer,  # heavy; import lazily
        )

        _check_fit_input(titles, paths)
        # Plain word unigrams: on held-out bundle items they matched or beat word bigrams and
        # character n-grams for the nearest neighbour.
        self._vectorizer = TfidfVectorizer(lowercase=True, strip_accents="unicode")
        self._matrix = self._vectorizer.fit_transform(titles)
        self._paths = list(paths)
        self._fallback = Counter(self._paths).most_common(1)[0][0]
        return self

    def predict(self, titles: Sequence[str]) -> list[CategoryPath]:
        if self._vectorizer is None:
            raise RuntimeError(f"{type(self).__name__}.predict called before fit")
        if not titles:
            return []
        # Rows are L2-normalised by TF-IDF, so the dot product is the cosine similarity.
        sims = (self._vectorizer.transform(titles) @ self._matrix.T).toarray()
        best = sims.argmax(axis=1)  # argmax keeps the first (lowest-index) neighbour on ties
        found = sims[np.arange(len(titles)), best] > 0
        return [self._paths[j] if ok else self._fallback for j, ok in zip(best, found)]


_DIGIT_RUNS = re.compile(r"\d+")


def title_text(title: str) -> str:
    """The title as the linear predictor reads it: lower case, no accents, digit runs blanked.

    Model numbers, sizes and counts say little about the category, and as rare tokens they
    would otherwise get the largest weights.
    """
    return _DIGIT_RUNS.sub(" ", _title_text_with_digits(title))


def _title_text_with_digits(title: str) -> str:
    # The same accent stripping as TfidfVectorizer(strip_accents="unicode"), which a custom
    # preprocessor replaces.
    decomposed = unicodedata.normalize("NFKD", title.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


class LinearTitlePredictor(CategoryPredictor):
    """Linear SVMs over word and character n-gram TF-IDF of digit-free titles.

    One classifier picks the leaf, so a leaf gets the evidence of all its items whatever
    their parents. Where training saw that leaf under several paths (``Men > Shirts`` and
    ``Women > Shirts``), a second classifier, fit on the items of such leaves only, picks
    the best-scoring of those paths.
    """

    name = "linear"
    description = (
        "linear SVM (C=0.7) over TF-IDF of digit-free title word 1-2-grams + char_wb 2-5-grams: "
        "leaf classifier, then a path classifier among the paths seen with that leaf; "
        "fit on training-bundle items"
    )  # describes the defaults, which are what the name "linear" stands for

    def __init__(
        self,
        *,
        C: float = 0.7,
        word_ngrams: tuple[int, int] | None = (1, 2),
        char_ngrams: tuple[int, int] | None = (2, 5),
        class_weight: str | None = None,
        blank_digits: bool = True,
        random_state: int = 0,
    ) -> None:
        """The defaults are what ``"linear"`` means; they were chosen on the card's hold-out
        among the variants in ``benchmarks/bench_categories.py --variants``. ``None`` n-gram
        ranges leave that feature set out; ``random_state`` seeds liblinear's dual solver,
        which shuffles, so outputs stay stable."""
        if word_ngrams is None and char_ngrams is None:
            raise ValueError("need word or character n-grams")
        self.C = C
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self.class_weight = class_weight
        self.blank_digits = blank_digits
        self.random_state = random_state
        self._features: FeatureUnion | None = None
        self._leaves: list[str] = []
        self._leaf_model: LinearSVC | None = None  # None: a single leaf
        self._paths: list[CategoryPath] = []  # every training path, sorted
        self._paths_of_leaf: dict[str, list[int]] = {}  # leaf -> indices into _paths
        self._shared_paths: dict[CategoryPath, int] = {}  # path of a many-path leaf -> column
        self._path_model: LinearSVC | None = None  # None: no leaf has several paths

    def _classifier(self) -> LinearSVC:
        from sklearn.svm import LinearSVC

        return LinearSVC(C=self.C, class_weight=self.class_weight, dual=True, random_state=self.random_state)

    def _features_union(self) -> FeatureUnion:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import FeatureUnion

        read = title_text if self.blank_digits else _title_text_with_digits
        parts = []
        if self.word_ngrams is not None:
            parts.append(("words", TfidfVectorizer(preprocessor=read, sublinear_tf=True,
                                                   ngram_range=self.word_ngrams)))
        if self.char_ngrams is not None:
            parts.append(("chars", TfidfVectorizer(preprocessor=read, sublinear_tf=True,
                                                   analyzer="char_wb", ngram_range=self.char_ngrams)))
        return FeatureUnion(parts)

    def fit(self, titles: Sequence[str], paths: Sequence[CategoryPath]) -> LinearTitlePredictor:
        _check_fit_input(titles, paths)
        self._features = self._features_union()
        x = self._features.fit_transform(titles)
        self._leaves = sorted({p[-1] for p in paths})
        self._leaf_model = self._fit_classifier(x, [p[-1] for p in paths], self._leaves)
        self._paths = sorted(set(paths))
        self._paths_of_leaf = {}
        for index, path in enumerate(self._paths):
            self._paths_of_leaf.setdefault(path[-1], []).append(index)
        shared = [self._paths[i] for ids in self._paths_of_leaf.values() if len(ids) > 1 for i in ids]
        self._shared_paths = {path: column for column, path in enumerate(sorted(shared))}
        rows = [r for r, path in enumerate(paths) if path in self._shared_paths]
        self._path_model = self._fit_classifier(
            x[rows], [paths[r] for r in rows], sorted(self._shared_paths)
        )
        return self

    def _fit_classifier(self, x: spmatrix, labels: Sequence[Hashable], classes: Sequence[Hashable]) -> LinearSVC | None:
        if len(classes) < 2:
            return None  # one class needs no classifier (and LinearSVC refuses one)
        index = {c: i for i, c in enumerate(classes)}
        return self._classifier().fit(x, np.array([index[label] for label in labels]))

    def predict(self, titles: Sequence[str]) -> list[CategoryPath]:
        if self._features is None:
            raise RuntimeError(f"{type(self).__name__}.predict called before fit")
        if not titles:
            return []
        x = self._features.transform(titles)
        if self._leaf_model is None:
            leaves = [self._leaves[0]] * len(titles)
        else:
            leaves = [self._leaves[i] for i in self._leaf_model.predict(x)]
        path_scores = _scores(self._path_model, x) if self._path_model is not None else None
        out = []
        for row, leaf in enumerate(leaves):
            candidates = [self._paths[i] for i in self._paths_of_leaf[leaf]]
            if len(candidates) > 1 and path_scores is not None:
                scores = [path_scores[row, self._shared_paths[p]] for p in candidates]
                out.append(candidates[int(np.argmax(scores))])  # argmax: the first path on ties
            else:
                out.append(candidates[0])
        return out


def _scores(model: LinearSVC, x: spmatrix) -> np.ndarray:
    """Decision scores with one column per class (binary models give one column only)."""
    scores = model.decision_function(x)
    return np.column_stack([-scores, scores]) if scores.ndim == 1 else scores


#: Predictors by name; the first is the default.
CATEGORY_PREDICTORS: dict[str, type[CategoryPredictor]] = {
    cls.name: cls for cls in (LinearTitlePredictor, NearestTitlePredictor)
}
DEFAULT_CATEGORY_PREDICTOR = LinearTitlePredictor.name


def check_category_predictor(name: str) -> str:
    """Return ``name`` or raise :class:`DataError` listing the known predictors."""
    if name not in CATEGORY_PREDICTORS:
        raise DataError(
            f"unknown category predictor {name!r}; expected one of {', '.join(CATEGORY_PREDICTORS)}"
        )
    return name


def make_category_predictor(name: str = DEFAULT_CATEGORY_PREDICTOR) -> CategoryPredictor:
    """A new, unfitted predictor of the given name."""
    return CATEGORY_PREDICTORS[check_category_predictor(name)]()


def holdout_accuracy(
    titles: Sequence[str],
    paths: Sequence[CategoryPath],
    *,
    seed: int,
    fraction: float = 0.2,
    predictor: str | Callable[[], CategoryPredictor] = DEFAULT_CATEGORY_PREDICTOR,
) -> dict:
    """Fit ``predictor`` on a seeded (1 - fraction) of the items and score the rest.

    ``predictor`` is a registered name or a factory of unfitted predictors (for comparing
    variants). Returns counts and the leaf (last name) and full-path exact-match accuracies.
    """
    n = len(titles)
    n_held = int(np.floor(n * fraction + 0.5))
    if n < 2 or n_held < 1 or n_held >= n:
        return {"n_fit": n, "n_heldout": 0, "leaf_accuracy": None, "path_accuracy": None}
    order = np.random.default_rng(seed).permutation(n)
    held, fit = order[:n_held], order[n_held:]
    model = make_category_predictor(predictor) if isinstance(predictor, str) else predictor()
    model.fit([titles[i] for i in fit], [paths[i] for i in fit])
    predicted = model.predict([titles[i] for i in held])
    truth = [paths[i] for i in held]
    leaf = sum(p[-1] == t[-1] for p, t in zip(predicted, truth)) / n_held
    full = sum(p == t for p, t in zip(predicted, truth)) / n_held
    return {
        "n_fit": len(fit),
        "n_heldout": int(n_held),
        "leaf_accuracy": round(float(leaf), 4),
        "path_accuracy": round(float(full), 4),
    }
