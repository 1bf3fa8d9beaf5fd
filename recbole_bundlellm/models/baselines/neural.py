"""The base of bundle generators trained by gradient descent (BBPR, POG, BGN, ...), and the item
features they share.

A :class:`NeuralBundleModel` is trained by :class:`~recbole_bundlellm.training.neural_trainer.NeuralBundleTrainer`:
``fit_bundles`` once (fit feature extractors, build the layers that depend on the training data),
then, each epoch, :meth:`NeuralBundleModel.session_loss` on batches of training *sessions* (the
unit of bundle generation; RecBole's loader yields item interactions), validation by bundle
generation on the valid sessions, best epoch by ``valid_metric`` (RecBole's early stopping).

Items are described by what the sessions carry — a title and a leaf category — never by their
id: test sessions hold items no training session has, so an id embedding would be noise there.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.models.base import BundleGenerator


@dataclass(frozen=True)
class SessionFeatures:
    """One session's items as tensors: title vectors ``[n, dim]`` and category ids ``[n]``
    (0 for a category no training session had)."""

    titles: torch.Tensor
    categories: torch.Tensor


class ItemFeaturizer:
    """Title vectors (TF-IDF of word 1-2-grams, reduced by truncated SVD to ``dim``, L2-normed)
    and a category vocabulary, fit on the training sessions' items."""

    def __init__(self, dim: int = 64, seed: int = 0) -> None:
        self.dim = dim
        self.seed = seed
        self.categories: dict[str, int] = {}
        self._tfidf: Any = None
        self._svd: Any = None
        self._cache: dict[str, np.ndarray] = {}

    def fit(self, sessions: Sequence[Session]) -> ItemFeaturizer:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        titles = sorted({t for s in sessions for t in s.titles})
        self._tfidf = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), strip_accents="unicode", min_df=1)
        matrix = self._tfidf.fit_transform(titles or ["empty"])
        # The SVD cannot have more components than the matrix has columns (tiny data).
        dim = max(1, min(self.dim, matrix.shape[1] - 1, matrix.shape[0] - 1)) if min(matrix.shape) > 1 else 1
        self._svd = TruncatedSVD(n_components=dim, random_state=self.seed) if dim > 1 else None
        if self._svd is not None:
            self._svd.fit(matrix)
        self.categories = {c: i + 1 for i, c in enumerate(sorted({c for s in sessions for c in s.categories}))}
        self._cache = {}
        return self

    @property
    def n_categories(self) -> int:
        """Rows a category embedding needs (unknown category included)."""
        return len(self.categories) + 1

    def title_vectors(self, titles: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(titles) if t not in self._cache]
        if missing:
            reduced = self._tfidf.transform(missing)
            reduced = self._svd.transform(reduced) if self._svd is not None else reduced[:, :1].toarray()
            # Zero-padded to `dim` (tiny data has fewer SVD components): layer sizes never depend on the data.
            padded = np.zeros((len(missing), self.dim), dtype=np.float32)
            padded[:, : reduced.shape[1]] = reduced[:, : self.dim]
            padded /= np.maximum(np.linalg.norm(padded, axis=1, keepdims=True), 1e-8)
            self._cache.update(zip(missing, padded))
        return np.stack([self._cache[t] for t in titles]) if titles else np.zeros((0, self.dim), np.float32)

    def session(self, session: Session, device: torch.device | str = "cpu") -> SessionFeatures:
        cats = session.categories or ("",) * len(session)
        return SessionFeatures(torch.from_numpy(self.title_vectors(session.titles)).to(device),
                               torch.tensor([self.categories.get(c, 0) for c in cats], dtype=torch.long,
                                            device=device))


class NeuralBundleModel(BundleGenerator):
    """A bundle generator with trainable torch parameters (see the module docstring).

    Subclasses implement :meth:`build` (layers sized by the fitted featurizer), :meth:`session_loss`
    and :meth:`generate_bundles`; the featurizer is ``self.items``.
    """

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        self.items = ItemFeaturizer(dim=int(config["item_feature_dim"]), seed=int(config["seed"]))
        self.built = False

    @property
    def device(self) -> torch.device:
        return next((p.device for p in self.parameters()), torch.device("cpu"))

    def fit_bundles(self, train_sessions: Sequence[Session]) -> None:
        """Fit the item features on the training sessions and build the layers once."""
        self.items.fit(train_sessions)
        if not self.built:
            self.build()
            self.built = True

    def build(self) -> None:
        """Create the layers (called once, after the featurizer is fit)."""
        raise NotImplementedError

    def training_sessions(self, sessions: Sequence[Session]) -> list[Session]:
        """The sessions a model learns from (default: those with a ground-truth bundle)."""
        return [s for s in sessions if s.bundles and len(s) >= 2]

    def session_loss(self, sessions: Sequence[Session], rng: random.Random) -> torch.Tensor:
        """The mean training loss over a batch of labelled sessions; ``rng`` is the epoch's
        seeded random source (negative sampling, orders), so training is reproducible."""
        raise NotImplementedError

    def features(self, session: Session) -> SessionFeatures:
        return self.items.session(session, self.device)


__all__ = ["ItemFeaturizer", "NeuralBundleModel", "SessionFeatures"]
