"""BBPR: bundle BPR with greedy bundle construction (Pathak, Gupta & McAuley, RecSys 2017),
adapted to finding bundles *inside* a session.

How it follows the original:

* **Bundle score = aggregate of item scores.** The paper scores a bundle for a user as the mean of
  the user's item preferences; its generation step adds an item-item compatibility term. Here
  ``S(b) = mean_{i in b} pref(i) + mean_{i<j in b} compat(i, j)``.
* **BPR training on bundles**: each observed bundle must score above sampled negative bundles,
  loss ``-log sigmoid(S(b) - S(b'))``.
* **Greedy construction**: a bundle is grown item by item while its score improves.

Where it must differ (as the AICL paper adapted it, bundles are found inside one session):

* **No user, no item ids.** Test sessions hold unseen items and no user, so an item is an MLP of
  its title vector and leaf-category embedding (:class:`~recbole_bundlellm.models.baselines.neural.ItemFeaturizer`).
  The "user" is the *session context*: with ``bbpr_context: mean`` it is the mean of the session's
  encoded items, and ``pref(i) = <context, item i> + bias(i)`` says how much item i belongs to what
  the session is about; ``bbpr_context: none`` drops it (``pref = bias``: compatibility only).
* **Compatibility** ``compat(i, j)`` is a learned symmetric bilinear form of the two encodings plus
  learned weights on their title cosine, a same-leaf indicator and the smoothed log-odds that their
  two leaves fell in one training bundle (:class:`LeafAffinity`). The paper's compatibility comes
  from item co-occurrence; test items are unseen, so it comes from leaf co-occurrence and features.
* **Negatives come from the same session**: a true bundle with 1..k of its k items swapped for
  session items outside it (same size; never another true bundle), ``bbpr_negatives`` per bundle,
  drawn from the epoch's seeded ``rng``. A session whose bundle is the whole session has no such
  negative and teaches nothing.
* **Decoding** (:func:`greedy_bundles`): seed with the best-scoring pair of the remaining items if
  it scores above the pair threshold, add the item that raises ``S`` most while that gain is above
  the gain threshold, take the bundle's items out and repeat; items left alone are in no bundle.
  The paper generates a bundle of fixed size for every user; here sizes and counts are decided by
  the thresholds, and a session where no pair passes gets the ``bbpr_fallback`` (the whole session,
  the best pair, or nothing).
* **Thresholds are relative** (scores of a BPR model have no absolute scale): the pair threshold is
  a quantile of all pair scores on ``bbpr_calibration_sessions`` training sessions (label-free,
  recomputed whenever the weights change), the gain threshold a multiple of their standard
  deviation. :meth:`BBPR.tune` picks quantile x gain x fallback by exact F1 on the valid sessions.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.models.base import BundlePrediction
from recbole_bundlellm.models.baselines.neural import NeuralBundleModel
from recbole_bundlellm.models.baselines.pairwise import pair_labels, session_pairs
from recbole_bundlellm.settings import SettingsError, check_row, check_rows


@dataclass(frozen=True)
class Decoding:
    """Greedy decoding settings, relative to the calibration scores (see the module docstring)."""

    pair_quantile: float
    gain: float
    fallback: str

    def __post_init__(self) -> None:
        # Built in code (from the keys and the tuning grids): the guard of the rows bbpr_pair_quantile
        # and bbpr_fallback, with their checker.
        check_row("bbpr_pair_quantile", self.pair_quantile)
        check_row("bbpr_fallback", self.fallback)


def bundle_score(pref: np.ndarray, compat: np.ndarray, members: Sequence[int]) -> float:
    """``S(b)``: mean item preference plus mean pair compatibility (``-inf`` below two items)."""
    idx = list(members)
    if len(idx) < 2:
        return float("-inf")
    block = compat[np.ix_(idx, idx)]
    pairs = len(idx) * (len(idx) - 1) / 2
    return float(pref[idx].mean() + np.triu(block, 1).sum() / pairs)


def pair_scores(pref: np.ndarray, compat: np.ndarray) -> np.ndarray:
    """``S({i, j})`` of every pair as a symmetric matrix (diagonal ``-inf``)."""
    scores = (pref[:, None] + pref[None, :]) / 2 + compat
    np.fill_diagonal(scores, -np.inf)
    return scores


def _grow(pref: np.ndarray, compat: np.ndarray, seed: tuple[int, int], pool: list[int],
          gain_threshold: float) -> list[int]:
    """Add to ``seed`` the pool item that raises ``S`` most while the rise exceeds the threshold."""
    bundle = list(seed)
    sum_pref, sum_pairs = float(pref[bundle].sum()), float(compat[seed[0], seed[1]])
    score = sum_pref / 2 + sum_pairs
    pool = [k for k in pool if k not in seed]
    while pool:
        m = len(bundle)
        cand = np.asarray(pool)
        # S(b + k) for every candidate, from running sums (no re-summing of the bundle).
        new = (sum_pref + pref[cand]) / (m + 1) + (sum_pairs + compat[np.ix_(cand, bundle)].sum(1)) / ((m + 1) * m / 2)
        best = int(np.argmax(new))  # argmax: the earliest item in session order on ties
        if new[best] - score <= gain_threshold:
            break
        k = pool.pop(best)
        sum_pref += float(pref[k])
        sum_pairs += float(compat[k, bundle].sum())
        bundle.append(k)
        score = float(new[best])
    return sorted(bundle)


def greedy_bundles(pref: np.ndarray, compat: np.ndarray, pair_threshold: float, gain_threshold: float,
                   fallback: str) -> list[tuple[int, ...]]:
    """Disjoint bundles (sorted positions) of one session by greedy construction (module docstring)."""
    n = len(pref)
    if n < 2:
        return []
    pairs = pair_scores(pref, compat)
    remaining = list(range(n))
    bundles: list[tuple[int, ...]] = []
    while len(remaining) >= 2:
        sub = pairs[np.ix_(remaining, remaining)]
        flat = int(np.argmax(sub))
        a, b = divmod(flat, len(remaining))
        if sub[a, b] <= pair_threshold:
            break
        bundle = _grow(pref, compat, (remaining[min(a, b)], remaining[max(a, b)]), remaining, gain_threshold)
        bundles.append(tuple(bundle))
        remaining = [k for k in remaining if k not in bundle]
    if bundles or fallback == "none":
        return bundles
    if fallback == "whole":
        return [tuple(range(n))]
    a, b = divmod(int(np.argmax(pairs)), n)
    return [(min(a, b), max(a, b))]


def negative_bundles(bundle: Sequence[int], n: int, truths: set[frozenset[int]], count: int,
                     rng: random.Random) -> list[tuple[int, ...]]:
    """Up to ``count`` negatives of a true bundle (positions): the same size, 1..k of its items
    swapped for session items outside it; never a true bundle of the session."""
    outside = [k for k in range(n) if k not in bundle]
    out: list[tuple[int, ...]] = []
    if not outside:
        return out
    for _ in range(count):
        r = rng.randint(1, min(len(bundle), len(outside)))
        dropped = set(rng.sample(list(bundle), r))
        negative = tuple(sorted([k for k in bundle if k not in dropped] + rng.sample(outside, r)))
        if frozenset(negative) not in truths:
            out.append(negative)
    return out


def _membership(bundles: Sequence[Sequence[int]], n: int) -> torch.Tensor:
    mask = torch.zeros(len(bundles), n)
    for row, bundle in enumerate(bundles):
        mask[row, list(bundle)] = 1.0
    return mask


class LeafAffinity:
    """How often two leaf categories fell in one training bundle vs. in one session apart, as
    smoothed log-odds: the paper's co-occurrence compatibility, on leaves because test items are
    unseen. A training session's own pairs are left out of its counts (leave-one-out), so training
    does not learn to trust counts that contain the answer."""

    def __init__(self, smoothing: float = 5.0) -> None:
        self.smoothing = smoothing
        self.together: Counter = Counter()
        self.apart: Counter = Counter()
        self.prior = 0.5
        self._own: dict[str, tuple[Counter, Counter]] = {}

    @staticmethod
    def _count(session: Session) -> tuple[Counter, Counter]:
        together: Counter = Counter()
        apart: Counter = Counter()
        for (i, j), label in zip(session_pairs(len(session)), pair_labels(session)):
            (together if label else apart)[frozenset((session.categories[i], session.categories[j]))] += 1
        return together, apart

    def fit(self, sessions: Sequence[Session]) -> LeafAffinity:
        self.together, self.apart, self._own = Counter(), Counter(), {}
        for s in sessions:
            if s.categories and s.bundles:
                own = self._own[s.session_id] = self._count(s)
                self.together.update(own[0])
                self.apart.update(own[1])
        total = sum(self.together.values()) + sum(self.apart.values())
        self.prior = (sum(self.together.values()) + 1) / (total + 2)
        return self

    def matrix(self, session: Session) -> np.ndarray:
        """Symmetric ``[n, n]`` log-odds of the session's leaf pairs (0 without categories)."""
        n = len(session)
        out = np.zeros((n, n), dtype=np.float32)
        if not session.categories:
            return out
        own_t, own_a = self._own.get(session.session_id, (Counter(), Counter()))
        for i, j in session_pairs(n):
            key = frozenset((session.categories[i], session.categories[j]))
            t, a = self.together[key] - own_t[key], self.apart[key] - own_a[key]
            out[i, j] = out[j, i] = np.log((t + self.smoothing * self.prior) / (a + self.smoothing * (1 - self.prior)))
        return out


class BBPR(NeuralBundleModel):
    """Bundle BPR over title/category item encodings, greedy decoding (see the module docstring)."""

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        check_rows(config, "bbpr_")  # ranges.yaml: BundleConfig checked them; a plain mapping was not
        self.context = str(config["bbpr_context"])
        self.decoding = Decoding(float(config["bbpr_pair_quantile"]), float(config["bbpr_gain"]),
                                 str(config["bbpr_fallback"]))
        self.calibration: list[Session] = []
        self.affinity = LeafAffinity(float(config["bbpr_smoothing"]))
        self._calibrated: tuple[str, float] | None = None  # (digest of the weights, std of the pair scores)
        self._pair_sample = np.zeros(0)
        self.run_info = {"decoding": asdict(self.decoding), "context": self.context, "tuned": False}

    # --- layers -------------------------------------------------------------------------------
    def build(self) -> None:
        size, cat = int(self.config["bbpr_embedding_size"]), int(self.config["bbpr_category_size"])
        # padding_idx: an unknown leaf (never seen in training) contributes nothing, not a random vector.
        self.category = nn.Embedding(self.items.n_categories, cat, padding_idx=0)
        self.encoder = nn.Sequential(nn.Linear(self.items.dim + cat, size), nn.ReLU(), nn.Linear(size, size))
        self.bias = nn.Linear(size, 1)
        self.context_proj = nn.Linear(size, size, bias=False)
        self.left = nn.Linear(size, size, bias=False)
        self.right = nn.Linear(size, size, bias=False)
        self.pair_weights = nn.Parameter(torch.zeros(3))  # title cosine, same leaf, leaf affinity

    def fit_bundles(self, train_sessions: Sequence[Session]) -> None:
        super().fit_bundles(train_sessions)
        # A fixed, label-free sample: the decoding thresholds are quantiles of its pair scores.
        self.affinity.fit(train_sessions)
        usable = [s for s in train_sessions if len(s) >= 2]
        self.calibration = usable[: int(self.config["bbpr_calibration_sessions"])]

    # --- scores -------------------------------------------------------------------------------
    def _batch_scores(self, sessions: Sequence[Session]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """``pref [N]`` and ``compat [N, N]`` over the items of all ``sessions`` stacked (only the
        diagonal blocks, one per session, mean anything) and each session's first row.

        One forward pass per batch: per-session passes of these tiny layers cost more in overhead
        than in arithmetic."""
        feats = [self.features(s) for s in sessions]
        starts = np.cumsum([0] + [len(s) for s in sessions]).tolist()
        titles = torch.cat([f.titles for f in feats])
        cats = torch.cat([f.categories for f in feats])
        h = self.encoder(torch.cat([titles, self.category(cats)], dim=1))
        pref = self.bias(h).squeeze(1)
        if self.context == "mean":
            # Row k of `segment` averages session k's items: the session context (the "user").
            segment = torch.zeros(len(sessions), len(h), device=h.device)
            owner = torch.zeros(len(h), dtype=torch.long, device=h.device)
            for k, (a, b) in enumerate(zip(starts, starts[1:])):
                segment[k, a:b] = 1.0 / max(b - a, 1)
                owner[a:b] = k
            context = self.context_proj(segment @ h)
            pref = pref + (h * context[owner]).sum(1)
        bilinear = self.left(h) @ self.right(h).T
        same_leaf = (cats[:, None] == cats[None, :]) & (cats[:, None] > 0)
        affinity = torch.zeros_like(bilinear)
        for s, a, b in zip(sessions, starts, starts[1:]):
            affinity[a:b, a:b] = torch.from_numpy(self.affinity.matrix(s))
        compat = ((bilinear + bilinear.T) / 2 + self.pair_weights[0] * (titles @ titles.T)
                  + self.pair_weights[1] * same_leaf.float() + self.pair_weights[2] * affinity)
        return pref, compat, starts

    def batch_scores(self, sessions: Sequence[Session], chunk: int = 64) -> list[tuple[np.ndarray, np.ndarray]]:
        """``pref`` and ``compat`` of each session as numpy arrays (no gradient)."""
        out = []
        with torch.no_grad():
            for first in range(0, len(sessions), chunk):
                pref, compat, starts = self._batch_scores(sessions[first:first + chunk])
                pref, compat = pref.double().cpu().numpy(), compat.double().cpu().numpy()
                out += [(pref[a:b], compat[a:b, a:b]) for a, b in zip(starts, starts[1:])]
        return out

    @staticmethod
    def _bundle_scores(pref: torch.Tensor, compat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``S(b)`` of each row of a 0/1 membership matrix ``[m, n]`` (every row has >= 2 items)."""
        size = mask.sum(1)
        pair_sum = ((mask @ compat) * mask).sum(1) - (mask * compat.diagonal()).sum(1)
        return mask @ pref / size + pair_sum / (size * (size - 1))  # pair_sum counts each pair twice

    # --- training -----------------------------------------------------------------------------
    def session_loss(self, sessions: Sequence[Session], rng: random.Random) -> torch.Tensor:
        count = int(self.config["bbpr_negatives"])
        starts = np.cumsum([0] + [len(s) for s in sessions]).tolist()
        pos: list[list[int]] = []
        neg: list[list[int]] = []
        for s, start in zip(sessions, starts):
            truths = [tuple(sorted({s.positions[i] for i in b})) for b in s.bundles]
            truths = [b for b in truths if len(b) >= 2]
            known = {frozenset(b) for b in truths}
            for b in truths:
                # A session that is one whole bundle has no same-session negative: it adds nothing.
                for negative in negative_bundles(b, len(s), known, count, rng):
                    pos.append([start + k for k in b])
                    neg.append([start + k for k in negative])
        if not pos:
            # Keeps backward() valid for a batch without negatives (a zero gradient).
            return sum(p.sum() * 0.0 for p in self.parameters())
        pref, compat, _ = self._batch_scores(sessions)
        n = len(pref)
        margin = (self._bundle_scores(pref, compat, _membership(pos, n).to(pref.device))
                  - self._bundle_scores(pref, compat, _membership(neg, n).to(pref.device)))
        return -nn.functional.logsigmoid(margin).mean()

    # --- decoding -----------------------------------------------------------------------------
    def _digest(self) -> str:
        h = hashlib.sha1()
        for p in self.parameters():
            h.update(p.detach().cpu().numpy().tobytes())
        return h.hexdigest()

    def _calibrate(self) -> None:
        """Pair scores of the calibration sessions under the current weights (once per weights)."""
        digest = self._digest()
        if self._calibrated is not None and self._calibrated[0] == digest:
            return
        values = []
        for s, (pref, compat) in zip(self.calibration, self.batch_scores(self.calibration)):
            values.append(pair_scores(pref, compat)[np.triu_indices(len(s), 1)])
        self._pair_sample = np.sort(np.concatenate(values)) if values else np.zeros(1)
        self._calibrated = (digest, float(self._pair_sample.std()) or 1.0)

    def thresholds(self, decoding: Decoding) -> tuple[float, float]:
        """Absolute (pair, gain) thresholds of a relative decoding under the current weights."""
        self._calibrate()
        assert self._calibrated is not None
        return float(np.quantile(self._pair_sample, decoding.pair_quantile)), decoding.gain * self._calibrated[1]

    def _decode(self, scored: Sequence[tuple[np.ndarray, np.ndarray]], decoding: Decoding) -> list[list[tuple[int, ...]]]:
        pair_t, gain_t = self.thresholds(decoding)
        return [greedy_bundles(pref, compat, pair_t, gain_t, decoding.fallback) for pref, compat in scored]

    def tune(self, valid_sessions: Sequence[Session]) -> dict[str, Any] | None:
        """Pick pair quantile x gain x fallback by exact F1 on valid (ties: best Jaccard, then grid order)."""
        from recbole_bundlellm.evaluation.bundle_metrics import compute_bundle_metrics

        sessions = [s for s in valid_sessions if s.bundles]
        if not self.config["bbpr_tune"] or not sessions:
            return None
        self.eval()
        scored = self.batch_scores(sessions)
        truths = [list(s.bundles) for s in sessions]
        best: tuple[float, float, Decoding] | None = None
        for quantile in self.config["bbpr_tune_pair_quantiles"]:
            for gain in self.config["bbpr_tune_gains"]:
                # The fallback only touches sessions left empty: decode once per (quantile, gain).
                base = self._decode(scored, Decoding(float(quantile), float(gain), "none"))
                for fallback in self.config["bbpr_tune_fallbacks"]:
                    decoding = Decoding(float(quantile), float(gain), str(fallback))
                    bundles = [b if b or fallback == "none" else self._fallback(sc, fallback)
                               for b, sc in zip(base, scored)]
                    preds = [[frozenset(s.item_ids[i] for i in b) for b in bs] for bs, s in zip(bundles, sessions)]
                    m = compute_bundle_metrics(preds, truths)
                    if best is None or (m["exact_f1"], m["best_jaccard"]) > best[:2]:
                        best = (m["exact_f1"], m["best_jaccard"], decoding)
        if best is None:
            raise SettingsError("bbpr_tune_pair_quantiles, bbpr_tune_gains and bbpr_tune_fallbacks must not be empty")
        self.decoding = best[2]
        chosen = {"decoding": asdict(self.decoding), "valid_exact_f1": round(best[0], 4),
                  "valid_best_jaccard": round(best[1], 4), "valid_sessions": len(sessions)}
        # update, not replace: the trainer has put its training record there already.
        self.run_info.update(chosen, tuned=True)
        return chosen

    @staticmethod
    def _fallback(scored: tuple[np.ndarray, np.ndarray], fallback: str) -> list[tuple[int, ...]]:
        # Thresholds nothing can pass: greedy_bundles goes straight to the fallback.
        return greedy_bundles(scored[0], scored[1], float("inf"), float("inf"), fallback)

    def generate_bundles(self, sessions: Sequence[Session]) -> list[BundlePrediction]:
        self.eval()
        bundles = self._decode(self.batch_scores(sessions), self.decoding)
        return [BundlePrediction(s.session_id, [tuple(s.item_ids[i] for i in b) for b in bs],
                                 failure=None if bs else "no pair scores above the threshold")
                for s, bs in zip(sessions, bundles)]


__all__ = ["BBPR", "Decoding", "bundle_score", "greedy_bundles", "negative_bundles", "pair_scores"]
