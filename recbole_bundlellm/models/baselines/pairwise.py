"""Pairwise: a learned "same bundle?" classifier over item pairs, then a grouping step (no LLM).

The cheap, strong reference an LLM method has to beat.

* **Pairs and labels.** Every unordered pair (i, j) of a training session is one example; its
  label is 1 when some ground-truth bundle holds both items, else 0 (so items in no bundle only
  give negatives).
* **Features** (:data:`PAIR_FEATURES`): title similarity (TF-IDF cosine of word 1-2-grams and of
  char_wb 3-5-grams, fit on the training titles; shared word tokens), leaf categories (same leaf;
  how often the two leaves fell in one training bundle vs. in one session but apart, smoothed;
  how often each leaf and each item was in a bundle at all), order (distance, adjacency,
  positions, session length) and context (how the pair ranks among each item's pairs in its
  session, by title similarity and by category affinity). The counting statistics of a training
  session come from the *other* folds of the training set (out-of-fold), so the classifier does
  not learn to trust counts that include the pair itself.
* **Categories.** Outside training bundles, leaf categories are predicted from titles; inside
  them they are the raw ones. With ``pairwise_train_categories: predicted`` the training-bundle
  items get an out-of-fold prediction too, so that training features look like test features.
* **Classifier**: scikit-learn HistGradientBoostingClassifier (or logistic regression), seeded.
* **Grouping** of one session from its pair probabilities: ``connected`` (connected components
  of the pairs above the threshold) or ``average`` (average-linkage agglomeration while the best
  merge averages above the threshold). Only groups of >= 2 items are bundles, so items left alone
  are in no bundle. A session where nothing passes gets the ``fallback``: the whole session, the
  most probable pair, or no bundle (a failed session).
* **Tuning** (:meth:`Pairwise.tune`): on the valid sessions, every grouping x fallback x threshold
  of the ``pairwise_tune_*`` grids is scored by exact F1 (ties: best Jaccard, then grid order);
  the best is kept. Without valid sessions the YAML's ``pairwise_grouping`` /
  ``pairwise_threshold`` / ``pairwise_fallback`` apply.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

import numpy as np

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.models.base import BundleGenerator, BundlePrediction
from recbole_bundlellm.settings import check_rows, check_value

#: Column names of the pair feature matrix, in order.
PAIR_FEATURES: tuple[str, ...] = (
    "word_cosine", "char_cosine", "shared_tokens", "token_jaccard",
    "same_category", "category_together", "category_apart", "category_affinity",
    "category_bundle_rate_min", "category_bundle_rate_max",
    "item_bundle_rate_min", "item_bundle_rate_max", "item_seen_min", "item_pair_together",
    "distance", "adjacent", "first_position", "last_position", "session_length", "distinct_categories",
    "word_rank", "word_gap", "affinity_rank", "affinity_gap", "same_category_count",
)

GROUPINGS = ("connected", "average")
FALLBACKS = ("whole", "best_pair", "none")
_TOKEN = re.compile(r"[a-z][a-z0-9]+")


@dataclass(frozen=True)
class Grouping:
    """How pair probabilities become bundles: method, threshold and fallback (see the module)."""

    method: str
    threshold: float
    fallback: str

    def __post_init__(self) -> None:
        # Built in code (from Pairwise's, PairSFT's or RecBoleBundler's keys, and their tuning
        # grids): the guard of the rows pairwise_grouping / bundler_grouping, with their checker.
        check_value("grouping", self.method, {"type": "str", "choices": GROUPINGS})
        check_value("grouping fallback", self.fallback, {"type": "str", "choices": FALLBACKS})


def session_pairs(n: int) -> list[tuple[int, int]]:
    """The unordered position pairs (i < j) of a session of ``n`` items, in a fixed order."""
    return list(combinations(range(n), 2))


def pair_labels(session: Session) -> np.ndarray:
    """1 for each pair of :func:`session_pairs` that some ground-truth bundle holds, else 0."""
    items = session.item_ids
    return np.array([int(any(items[i] in b and items[j] in b for b in session.bundles))
                     for i, j in session_pairs(len(session))], dtype=np.int64)


def group_pairs(prob: np.ndarray, grouping: Grouping) -> list[tuple[int, ...]]:
    """Disjoint bundles (sorted positions, >= 2 items each) from a symmetric n x n matrix of pair
    probabilities; see the module docstring for the methods and the fallback."""
    n = prob.shape[0]
    if grouping.method == "connected":
        clusters = _connected(prob, grouping.threshold)
    else:
        clusters = _average_linkage(prob, grouping.threshold)
    bundles = sorted(tuple(sorted(c)) for c in clusters if len(c) >= 2)
    if bundles or n < 2 or grouping.fallback == "none":
        return bundles
    if grouping.fallback == "whole":
        return [tuple(range(n))]
    upper = np.triu_indices(n, 1)
    best = int(np.argmax(prob[upper]))  # argmax: the first pair in session order on ties
    return [(int(upper[0][best]), int(upper[1][best]))]


def _connected(prob: np.ndarray, threshold: float) -> list[list[int]]:
    n = prob.shape[0]
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in session_pairs(n):
        if prob[i, j] > threshold:
            parent[root(j)] = root(i)
    clusters: dict[int, list[int]] = {}
    for i in range(n):
        clusters.setdefault(root(i), []).append(i)
    return list(clusters.values())


def _average_linkage(prob: np.ndarray, threshold: float) -> list[list[int]]:
    clusters = [[i] for i in range(prob.shape[0])]
    while len(clusters) > 1:
        best, best_pair = threshold, None
        for a, b in combinations(range(len(clusters)), 2):
            link = float(prob[np.ix_(clusters[a], clusters[b])].mean())
            if link > best:  # strict: the first best merge wins ties
                best, best_pair = link, (a, b)
        if best_pair is None:
            break
        a, b = best_pair
        clusters[a] = clusters[a] + clusters.pop(b)
    return clusters


def tokens(title: str) -> set[str]:
    """Lower-case word tokens of a title (2+ characters, starting with a letter)."""
    return set(_TOKEN.findall(title.lower()))


@dataclass
class CooccurrenceStats:
    """Counts over training sessions: leaf pairs together in a bundle or apart in a session,
    leaves and items in a bundle or seen at all, item pairs together in a bundle."""

    category_together: Counter
    category_apart: Counter
    category_in_bundle: Counter
    category_seen: Counter
    item_in_bundle: Counter
    item_seen: Counter
    item_pair_together: Counter
    pair_rate: float  # share of session pairs that are together: the prior of the smoothed rates
    bundle_rate: float  # share of session items that are in a bundle: the prior of the item rates

    @classmethod
    def count(cls, sessions: Sequence[Session]) -> CooccurrenceStats:
        """Count over ``sessions`` (with bundles and categories)."""
        cat_together: Counter = Counter()
        cat_apart: Counter = Counter()
        cat_in: Counter = Counter()
        cat_seen: Counter = Counter()
        item_in: Counter = Counter()
        item_seen: Counter = Counter()
        item_pairs: Counter = Counter()
        together = pairs = in_bundle = items = 0
        for session in sessions:
            cats = session.categories
            labels = pair_labels(session)
            members = set().union(*session.bundles) if session.bundles else set()
            for (i, j), label in zip(session_pairs(len(session)), labels):
                key = frozenset((cats[i], cats[j]))
                if label:
                    cat_together[key] += 1
                    item_pairs[frozenset((session.item_ids[i], session.item_ids[j]))] += 1
                else:
                    cat_apart[key] += 1
            for item, cat in zip(session.item_ids, cats):
                cat_seen[cat] += 1
                item_seen[item] += 1
                if item in members:
                    cat_in[cat] += 1
                    item_in[item] += 1
            together += int(labels.sum())
            pairs += len(labels)
            in_bundle += sum(item in members for item in session.item_ids)
            items += len(session)
        return cls(cat_together, cat_apart, cat_in, cat_seen, item_in, item_seen, item_pairs,
                   together / max(pairs, 1), in_bundle / max(items, 1))


class PairFeaturizer:
    """Turns a session into its pair feature matrix (rows: :func:`session_pairs`, columns:
    :data:`PAIR_FEATURES`). Fit the TF-IDF vocabularies on training titles first."""

    def __init__(self, smoothing: float = 5.0) -> None:
        self.smoothing = smoothing  # pseudo-counts of the prior in every smoothed rate
        self._word: Any = None
        self._char: Any = None

    def fit(self, titles: Sequence[str]) -> PairFeaturizer:
        from sklearn.feature_extraction.text import TfidfVectorizer

        unique = sorted(set(titles))
        self._word = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), strip_accents="unicode").fit(unique)
        self._char = TfidfVectorizer(sublinear_tf=True, analyzer="char_wb", ngram_range=(3, 5),
                                     strip_accents="unicode").fit(unique)
        return self

    def _rate(self, hits: float, total: float, prior: float) -> float:
        return (hits + self.smoothing * prior) / (total + self.smoothing)

    def transform(self, session: Session, stats: CooccurrenceStats) -> np.ndarray:
        """The feature matrix of ``session`` (needs its categories), counts taken from ``stats``."""
        if self._word is None:
            raise RuntimeError("PairFeaturizer.transform called before fit")
        n = len(session)
        pairs = session_pairs(n)
        if not pairs:
            return np.zeros((0, len(PAIR_FEATURES)))
        titles, cats, items = session.titles, session.categories, session.item_ids
        # TF-IDF rows are L2-normalised, so the dot product is the cosine.
        word_x, char_x = self._word.transform(titles), self._char.transform(titles)
        word, char = (word_x @ word_x.T).toarray(), (char_x @ char_x.T).toarray()
        toks = [tokens(t) for t in titles]
        affinity = np.zeros((n, n))
        for i, j in pairs:
            key = frozenset((cats[i], cats[j]))
            t, a = stats.category_together[key], stats.category_apart[key]
            affinity[i, j] = affinity[j, i] = self._rate(t, t + a, stats.pair_rate)
        cat_rate = [self._rate(stats.category_in_bundle[c], stats.category_seen[c], stats.bundle_rate) for c in cats]
        item_rate = [self._rate(stats.item_in_bundle[x], stats.item_seen[x], stats.bundle_rate) for x in items]
        item_seen = [np.log1p(stats.item_seen[x]) for x in items]
        word_rank, word_gap = _context(word)
        aff_rank, aff_gap = _context(affinity)
        cat_count = Counter(cats)
        distinct = len(cat_count) / n
        rows = []
        for i, j in pairs:
            key = frozenset((cats[i], cats[j]))
            shared = len(toks[i] & toks[j])
            union = len(toks[i] | toks[j])
            rows.append((
                word[i, j], char[i, j], shared, shared / union if union else 0.0,
                float(cats[i] == cats[j]), np.log1p(stats.category_together[key]),
                np.log1p(stats.category_apart[key]), affinity[i, j],
                min(cat_rate[i], cat_rate[j]), max(cat_rate[i], cat_rate[j]),
                min(item_rate[i], item_rate[j]), max(item_rate[i], item_rate[j]),
                min(item_seen[i], item_seen[j]),
                np.log1p(stats.item_pair_together[frozenset((items[i], items[j]))]),
                j - i, float(j - i == 1), i / (n - 1), j / (n - 1), n, distinct,
                max(word_rank[i, j], word_rank[j, i]), min(word_gap[i, j], word_gap[j, i]),
                max(aff_rank[i, j], aff_rank[j, i]), min(aff_gap[i, j], aff_gap[j, i]),
                cat_count[cats[i]] + cat_count[cats[j]] - 2,
            ))
        return np.asarray(rows, dtype=np.float64)


def _context(sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per ordered pair (i, j): the rank of j among i's partners by ``sim`` (0 = i's best) and
    ``sim[i, j]`` minus i's best similarity."""
    masked = sim.astype(float).copy()
    np.fill_diagonal(masked, -np.inf)
    # argsort of the negated row, twice, ranks each partner (stable: session order on ties).
    rank = np.argsort(np.argsort(-masked, axis=1, kind="stable"), axis=1, kind="stable").astype(float)
    gap = masked - masked.max(axis=1, keepdims=True)
    return rank, gap


def folds_of(n: int, k: int) -> np.ndarray:
    """Fold of each of ``n`` training sessions (round robin over the id-sorted sessions)."""
    return np.arange(n) % max(k, 1)


def predicted_training_categories(sessions: Sequence[Session], folds: int, seed: int) -> list[Session]:
    """``sessions`` with their training-bundle items' leaf categories replaced by an out-of-fold
    prediction from titles (the dataset's linear predictor, fit on the other folds' bundle items),
    so training categories carry the noise that predicted valid/test categories carry."""
    from recbole_bundlellm.data.category_predictors import LinearTitlePredictor

    labelled: dict[str, tuple[str, str]] = {}  # item -> (title, raw leaf), over bundle items
    for s in sessions:
        members = set().union(*s.bundles) if s.bundles else set()
        for item, title, cat in zip(s.item_ids, s.titles, s.categories):
            if item in members:
                labelled.setdefault(item, (title, cat))
    names = sorted(labelled)
    fold = {item: f for item, f in zip(names, folds_of(len(names), folds))}
    predicted: dict[str, str] = {}
    for k in range(max(folds, 1)):
        fit = [labelled[x] for x in names if fold[x] != k]
        held = [x for x in names if fold[x] == k]
        if not held or not fit:
            continue
        model = LinearTitlePredictor(random_state=seed).fit([t for t, _ in fit], [(c,) for _, c in fit])
        predicted.update(zip(held, (p[-1] for p in model.predict([labelled[x][0] for x in held]))))
    return [Session(s.session_id, s.item_ids, s.titles,
                    tuple(predicted.get(x, c) if x in labelled else c for x, c in zip(s.item_ids, s.categories)),
                    s.bundles, s.intents)
            for s in sessions]


class Pairwise(BundleGenerator):
    """Pair classifier + grouping; the ``pairwise_*`` keys of ``Pairwise.yaml`` set it up."""

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        check_rows(config, "pairwise_")  # ranges.yaml: BundleConfig checked them; a plain mapping was not
        self.featurizer = PairFeaturizer(smoothing=float(config["pairwise_smoothing"]))
        self.grouping = Grouping(config["pairwise_grouping"], float(config["pairwise_threshold"]),
                                 config["pairwise_fallback"])
        self.classifier: Any = None
        self.constant: float | None = None
        self.stats: CooccurrenceStats | None = None
        self.run_info = {"grouping": asdict(self.grouping), "tuned": False}  # see BundleGenerator.run_info

    def _new_classifier(self) -> Any:
        kind, seed = self.config["pairwise_classifier"], int(self.config["pairwise_seed"])
        if kind == "hgb":
            from sklearn.ensemble import HistGradientBoostingClassifier

            return HistGradientBoostingClassifier(
                max_iter=int(self.config["pairwise_max_iter"]), learning_rate=float(self.config["pairwise_learning_rate"]),
                max_leaf_nodes=int(self.config["pairwise_max_leaf_nodes"]), l2_regularization=1.0,
                early_stopping=False, random_state=seed)
        # "logistic" (__init__ refused anything else)
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))

    def training_matrix(self, train_sessions: Sequence[Session]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features (out-of-fold counts), labels and session index (into ``train_sessions``) of
        every pair of the training sessions; also fits the featurizer and keeps the counts of all
        training sessions for generation."""
        sessions = list(train_sessions)
        if any(not s.categories for s in sessions):
            raise KeyError("Pairwise needs item categories: add `category` to load_col['item']")
        k, seed = int(self.config["pairwise_folds"]), int(self.config["pairwise_seed"])
        if self.config["pairwise_train_categories"] == "predicted":
            sessions = predicted_training_categories(sessions, k, seed)
        self.featurizer.fit([t for s in sessions for t in s.titles])
        fold = folds_of(len(sessions), k)
        xs, ys, index = [], [], []
        for f in range(max(k, 1)):
            rest = [s for s, g in zip(sessions, fold) if g != f] if k > 1 else sessions
            stats = CooccurrenceStats.count(rest)
            for number, (s, g) in enumerate(zip(sessions, fold)):
                if g == f and len(s) >= 2:
                    xs.append(self.featurizer.transform(s, stats))
                    ys.append(pair_labels(s))
                    index.append(np.full(len(ys[-1]), number))
        self.stats = CooccurrenceStats.count(sessions)
        if not xs:
            raise ValueError("Pairwise needs training sessions of at least 2 items")
        return np.vstack(xs), np.concatenate(ys), np.concatenate(index)

    def fit_bundles(self, train_sessions: Sequence[Session]) -> None:
        x, y, _ = self.training_matrix(train_sessions)
        # A training set with a single label (tiny data) gets that label as a constant.
        self.constant = float(y[0]) if len(np.unique(y)) == 1 else None
        self.classifier = self._new_classifier().fit(x, y) if self.constant is None else None

    def probabilities(self, session: Session) -> np.ndarray:
        """The symmetric n x n matrix of "same bundle" probabilities of a session (diagonal 0)."""
        if self.stats is None:
            raise RuntimeError("Pairwise: fit_bundles must run before generation")
        n = len(session)
        prob = np.zeros((n, n))
        pairs = session_pairs(n)
        if pairs:
            x = self.featurizer.transform(session, self.stats)
            p = np.full(len(x), self.constant) if self.classifier is None else self.classifier.predict_proba(x)[:, 1]
            for (i, j), value in zip(pairs, p):
                prob[i, j] = prob[j, i] = value
        return prob

    def tune(self, valid_sessions: Sequence[Session]) -> dict[str, Any] | None:
        """Pick grouping, fallback and threshold by exact F1 on the valid sessions (see module)."""
        if not self.config["pairwise_tune"]:
            return None
        sessions = [s for s in valid_sessions if s.bundles]
        if not sessions:
            return None
        probs = [self.probabilities(s) for s in sessions]
        scored = tune_grouping(probs, sessions, self.config["pairwise_tune_groupings"],
                               self.config["pairwise_tune_fallbacks"], self.config["pairwise_tune_thresholds"])
        self.grouping, f1, jaccard = scored
        chosen = {"grouping": asdict(self.grouping), "valid_exact_f1": round(f1, 4),
                  "valid_best_jaccard": round(jaccard, 4), "valid_sessions": len(sessions)}
        self.run_info = {**chosen, "tuned": True}
        return chosen

    def generate_bundles(self, sessions: Sequence[Session]) -> list[BundlePrediction]:
        return [grouped_prediction(session, self.probabilities(session), self.grouping) for session in sessions]


def grouped_prediction(session: Session, prob: np.ndarray, grouping: Grouping) -> BundlePrediction:
    """The bundles that ``grouping`` forms from one session's pair probabilities, as raw item ids."""
    bundles = group_pairs(prob, grouping)
    return BundlePrediction(session.session_id, [tuple(session.item_ids[i] for i in b) for b in bundles],
                            failure=None if bundles else "no pair passes the threshold")


def tune_grouping(probs: Sequence[np.ndarray], sessions: Sequence[Session], methods: Sequence[str],
                  fallbacks: Sequence[str], thresholds: Sequence[float]) -> tuple[Grouping, float, float]:
    """The grouping with the best (exact F1, best Jaccard) on labelled sessions, given their pair
    probabilities; the first in grid order (methods, fallbacks, thresholds) wins ties."""
    from recbole_bundlellm.evaluation.bundle_metrics import compute_bundle_metrics

    truths = [list(s.bundles) for s in sessions]
    best: tuple[Grouping, float, float] | None = None
    for method in methods:
        for fallback in fallbacks:
            for threshold in thresholds:
                grouping = Grouping(method, float(threshold), fallback)
                preds = [[frozenset(s.item_ids[i] for i in b) for b in group_pairs(p, grouping)]
                         for p, s in zip(probs, sessions)]
                m = compute_bundle_metrics(preds, truths)
                if best is None or (m["exact_f1"], m["best_jaccard"]) > (best[1], best[2]):
                    best = (grouping, m["exact_f1"], m["best_jaccard"])
    if best is None:
        raise ValueError("empty tuning grid")
    return best
