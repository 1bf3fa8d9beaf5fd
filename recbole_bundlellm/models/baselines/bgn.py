"""BGN: Bundle Generation Network (Bai, Zhou, Wang et al., "Personalized Bundle List
Recommendation", WWW 2019), adapted to find the bundles *inside* one session, as the AICL paper did.

**How it follows the original.** BGN is an encoder-decoder: an encoder reads the user's context
items, a decoder emits a bundle item by item with a *feature-aware* softmax (item scores come from
item features, not from an id vocabulary), training is teacher-forced cross-entropy on observed
bundles, and a *list* of bundles is produced by beam search whose score trades the quality of each
bundle against its diversity from the bundles already in the list. Here:

* **Encoder**: the session's items (title vector + category embedding from
  :class:`~recbole_bundlellm.models.baselines.neural.SessionFeatures`, plus the smoothed rate at which the
  item's category is in a training bundle), projected and read in session order by a small
  bi-GRU, added to the projection (a residual): one context vector per item.
* **Decoder**: a GRU over the bundles of the session one after another,
  ``START b1 END b2 END ... END``; at each step a pointer softmax over the session's items plus an
  ``END`` choice. ``END`` closes the current bundle (allowed once it has >= 2 items); ``END`` at a
  bundle's first step says "no more bundles" (not allowed before the first bundle: every session
  has one). An item's score is the dot product of the decoder state with the item's key, plus a
  *pair term* (its mean compatibility with the items already in the current bundle) and a learned
  *coverage* vector added to the key when the item is already in an earlier bundle. Items of a
  bundle are emitted in session order (positions rise inside a bundle), so a bundle is one
  sequence, not all its permutations; bundles come in the order of their first item.
* **Training**: teacher forcing on the ground-truth bundles, cross-entropy over the allowed
  choices of every step (RecBole Trainer, early stopping on valid ExactF1).
* **Generation**: bundle after bundle, a beam search (``bgn_beam_size``) per bundle; a candidate
  bundle's score is its log-probability minus ``bgn_diversity`` times the number of its items
  already in earlier bundles. The list stops when ``END`` wins (its probability at a bundle's
  first step reaches ``bgn_stop_probability``), when a bundle scores below ``bgn_threshold``, or
  after ``bgn_max_bundles``. The three are tuned on valid by exact F1 (:meth:`BGN.tune`).

**Where it must differ.** The original decodes over a global item catalogue for a *user*; here the
candidates are the few items of one session, and test items are unseen in training, so there is
no id embedding: titles and categories only. What the original's item embeddings learn from
co-occurrence is given here at the category level: the pair term adds, to a learned bilinear form
of the context vectors, learned weights of title cosine, same category, session distance, and the
training counts of the two categories together in a bundle (smoothed rate, log count; a training
session reads the counts of the other folds, as Pairwise does, so training does not learn to
trust counts that include itself). The original's diversity term is a determinantal point
process over the bundles of the list, with a masking of repeated items in its beam search; in a
session of ~6 items the DPP's quality x diversity trade-off reduces to penalising item overlap, so
it becomes an additive overlap penalty in the beam score (a soft version of the original's mask;
a large ``bgn_diversity`` is the hard mask), and the coverage vector lets training learn the same
preference. The original's list length is fixed (top-k bundles); here the number of bundles is
part of the answer, so ``END`` and a threshold tuned on valid decide it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.models.base import BundlePrediction
from recbole_bundlellm.models.baselines.neural import NeuralBundleModel
from recbole_bundlellm.settings import SettingsError, check_rows

#: Index of the END choice among a step's candidates (item i is candidate i + 1).
END = 0
#: The tuning grids (BGN.yaml), all needed when ``bgn_tune`` is on.
TUNE_GRIDS = ("bgn_tune_diversity", "bgn_tune_stop_probabilities", "bgn_tune_thresholds")
_NEG = -1e9


@dataclass
class Decoded:
    """One generated bundle: item positions, its beam score, and END's log-probability at its
    first step (how strongly the model wanted to stop instead; ``None`` for the first bundle)."""

    items: tuple[int, ...]
    score: float
    stop_logp: float | None


@dataclass
class _Hyp:
    items: tuple[int, ...]
    state: torch.Tensor  # decoder state [hidden] after the hypothesis' last input
    score: float


def target_sequence(session: Session) -> list[list[int]]:
    """The ground-truth bundles as sorted position lists, ordered by their first item (the order
    the decoder learns to emit them in); items not in the session are ignored."""
    bundles = {tuple(sorted(session.positions[i] for i in b if i in session.positions)) for b in session.bundles}
    return sorted(b for b in bundles if len(b) >= 2)


def step_masks(n: int, bundles: Sequence[Sequence[int]]) -> tuple[list[int], list[list[bool]], list[list[float]],
                                                                list[list[float]], list[int]]:
    """Teacher-forcing tables of one session: per step, its target candidate, which candidates are
    allowed, which items are in an earlier bundle (coverage), which are in the current bundle, and
    the current bundle's length. Candidates: END then the ``n`` items."""
    targets: list[int] = []
    allowed: list[list[bool]] = []
    covered: list[list[float]] = []
    current: list[list[float]] = []
    lengths: list[int] = []
    used = [0.0] * n
    for k, bundle in enumerate([*bundles, None]):
        chosen: list[int] = []
        for target in [*(bundle or ()), None]:
            last = chosen[-1] if chosen else -1
            # END: closes a bundle of >= 2 items, or stops before a new one (not before the first).
            end_ok = len(chosen) >= 2 or (not chosen and k > 0)
            allowed.append([end_ok] + [i > last for i in range(n)])
            covered.append(list(used))
            current.append([float(i in chosen) for i in range(n)])
            lengths.append(len(chosen))
            targets.append(END if target is None else target + 1)
            if target is not None:
                chosen.append(target)
        if bundle is None:
            break
        for i in bundle:
            used[i] = 1.0
    return targets, allowed, covered, current, lengths


class BGN(NeuralBundleModel):
    """Encoder-decoder with a pointer over the session's items (see the module docstring); the
    ``bgn_*`` keys of ``BGN.yaml`` set it up."""

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        check_rows(config, "bgn_")  # ranges.yaml: BundleConfig checked them; a plain mapping was not
        validate_settings(config)
        self.hidden = int(config["bgn_hidden"])
        self.category_dim = int(config["bgn_category_dim"])
        self.beam_size = int(config["bgn_beam_size"])
        self.max_bundles = int(config["bgn_max_bundles"])
        self.folds = int(config["bgn_folds"])
        self.smoothing = float(config["bgn_smoothing"])
        self.stats: Any = None
        self._session_stats: dict[tuple, Any] = {}
        self._counts: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.shuffle_bundles = bool(config["bgn_shuffle_bundles"])
        self.dropout_p = float(config["bgn_dropout"])
        self.diversity = float(config["bgn_diversity"])
        self.threshold = _threshold(config["bgn_threshold"])
        self.stop_probability = float(config["bgn_stop_probability"])
        self.tune_diversity = [float(v) for v in config["bgn_tune_diversity"] or []]
        self.tune_stop = [float(v) for v in config["bgn_tune_stop_probabilities"] or []]
        self.tune_thresholds = [_threshold(v) for v in config["bgn_tune_thresholds"] or []]
        self.run_info = {"diversity": self.diversity, "stop_probability": self.stop_probability,
                         "threshold": _show(self.threshold), "tuned": False}

    # ----------------------------------------------------------------------------------- layers

    def build(self) -> None:
        h = self.hidden
        self.category = nn.Embedding(self.items.n_categories, self.category_dim, padding_idx=0)
        # Item input: title vector, category embedding, and its category's smoothed bundle rate.
        self.project = nn.Sequential(nn.Linear(self.items.dim + self.category_dim + 1, h), nn.Tanh())
        self.encoder = nn.GRU(h, h // 2, batch_first=True, bidirectional=True)
        self.encoded = nn.Linear(2 * (h // 2), h)
        self.init_state = nn.Linear(h, h)
        self.decoder = nn.GRU(h, h, batch_first=True)
        self.start = nn.Parameter(torch.randn(h) * 0.1)
        self.end_input = nn.Parameter(torch.randn(h) * 0.1)
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.coverage = nn.Parameter(torch.zeros(h))  # added to the key of an item already in a bundle
        self.end_key = nn.Parameter(torch.randn(h) * 0.1)
        self.end_by_length = nn.Embedding(4, 1)  # END's bias by current bundle length (0, 1, 2, 3+)
        self.pair_left = nn.Linear(h, h, bias=False)
        self.pair_right = nn.Linear(h, h, bias=False)
        # Weights of explicit pair signals (what a pair classifier would use): title cosine, same
        # category, and the training counts of the two categories (smoothed together rate, log
        # count); plus a bias by the distance in the session (1, 2, 3, 4+).
        self.pair_weights = nn.Parameter(torch.zeros(4))
        self.pair_distance = nn.Embedding(5, 1)
        nn.init.zeros_(self.pair_distance.weight)
        self.drop = nn.Dropout(self.dropout_p)

    def encode(self, sessions: Sequence[Session]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Item context vectors ``[B, N, h]`` (zero-padded), the item mask ``[B, N]`` and the
        pair compatibilities ``[B, N, N]``."""
        feats = [self.features(s) for s in sessions]
        lengths = torch.tensor([len(s) for s in sessions])
        n = int(lengths.max())
        titles = torch.zeros(len(sessions), n, self.items.dim, device=self.device)
        cats = torch.zeros(len(sessions), n, dtype=torch.long, device=self.device)
        rates = torch.zeros(len(sessions), n, 1, device=self.device)
        counts = torch.zeros(len(sessions), n, n, 2, device=self.device)
        for b, (f, s) in enumerate(zip(feats, sessions)):
            titles[b, : len(s)], cats[b, : len(s)] = f.titles, f.categories
            rates[b, : len(s), 0], counts[b, : len(s), : len(s)] = self.category_counts(s)
        base = self.project(self.drop(torch.cat([titles, self.category(cats), rates], dim=-1)))
        packed = pack_padded_sequence(base, lengths, batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.encoder(packed)[0], batch_first=True, total_length=n)
        mask = torch.arange(n, device=self.device)[None, :] < lengths.to(self.device)[:, None]
        items = (base + self.encoded(out)) * mask[..., None]
        return items, mask, self.pair_scores(items, titles, cats) + counts @ self.pair_weights[2:]

    def initial_state(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The decoder's first hidden state ``[B, h]``: a summary of the session's items."""
        mean = items.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return torch.tanh(self.init_state(mean))

    def logits(self, state: torch.Tensor, items: torch.Tensor, pair: torch.Tensor, covered: torch.Tensor,
               current: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Candidate scores ``[..., 1 + N]`` (END first) of decoder states ``[..., h]``.

        ``items`` ``[..., N, h]``, ``pair`` ``[..., N, N]`` compatibilities, ``covered`` /
        ``current`` ``[..., N]`` (item in an earlier / the current bundle), ``lengths`` ``[...]``.
        """
        q = self.query(state) / math.sqrt(self.hidden)
        keys = self.key(items)
        item = (q[..., None, :] * keys).sum(-1) + covered * (q @ self.coverage)[..., None]
        # Mean compatibility with the items already chosen for this bundle.
        size = current.sum(-1, keepdim=True).clamp(min=1)
        item = item + (current[..., None, :] @ pair).squeeze(-2) / size
        end = q @ self.end_key + self.end_by_length(lengths.clamp(max=3)).squeeze(-1)
        return torch.cat([end[..., None], item], dim=-1)

    def pair_scores(self, items: torch.Tensor, titles: torch.Tensor, cats: torch.Tensor) -> torch.Tensor:
        """How well item j joins a bundle holding item i ``[B, N, N]``: a bilinear form of the
        context vectors plus learned weights of title cosine, same category and distance."""
        n = items.shape[1]
        learned = self.pair_left(items) @ self.pair_right(items).transpose(-1, -2) / math.sqrt(self.hidden)
        cosine = titles @ titles.transpose(-1, -2)
        same = ((cats[:, :, None] == cats[:, None, :]) & (cats[:, :, None] > 0)).float()
        position = torch.arange(n, device=self.device)
        distance = (position[:, None] - position[None, :]).abs().clamp(min=1, max=4)
        return (learned + self.pair_weights[0] * cosine + self.pair_weights[1] * same
                + self.pair_distance(distance).squeeze(-1))

    # ------------------------------------------------------------------- category statistics

    def fit_bundles(self, train_sessions: Sequence[Session]) -> None:
        """Fit features and layers; count category co-occurrence in the training bundles, per
        fold too: a training session reads the counts of the *other* folds, so training does not
        learn to trust counts that include the session itself (as Pairwise does)."""
        super().fit_bundles(train_sessions)
        from recbole_bundlellm.models.baselines.pairwise import CooccurrenceStats, folds_of

        sessions = [s for s in train_sessions if s.categories]
        self.stats = CooccurrenceStats.count(sessions)
        fold = folds_of(len(sessions), self.folds)
        by_fold = [CooccurrenceStats.count([s for s, g in zip(sessions, fold) if g != f]) if self.folds > 1
                   else self.stats for f in range(self.folds)]
        self._session_stats = {(s.session_id, s.item_ids): by_fold[g] for s, g in zip(sessions, fold)}
        self._counts = {}

    def category_counts(self, session: Session) -> tuple[torch.Tensor, torch.Tensor]:
        """Per item, the logit of its category's smoothed bundle rate ``[n]``; per pair, the logit
        of the categories' smoothed together rate and log1p of their together count ``[n, n, 2]``."""
        key = (session.session_id, session.item_ids)
        if key not in self._counts:
            stats = self._session_stats.get(key, self.stats)
            cats = session.categories or ("",) * len(session)
            k = self.smoothing

            def logit(hits: float, total: float, prior: float) -> float:
                rate = (hits + k * prior) / (total + k)
                return math.log(max(rate, 1e-4) / max(1 - rate, 1e-4))
            rates = torch.tensor([logit(stats.category_in_bundle[c], stats.category_seen[c], stats.bundle_rate)
                                  for c in cats])
            pairs = torch.zeros(len(session), len(session), 2)
            for i, a in enumerate(cats):
                for j, b in enumerate(cats):
                    together = stats.category_together[frozenset((a, b))]
                    apart = stats.category_apart[frozenset((a, b))]
                    pairs[i, j, 0] = logit(together, together + apart, stats.pair_rate)
                    pairs[i, j, 1] = math.log1p(together)
            self._counts[key] = (rates, pairs)
        rates, pairs = self._counts[key]
        return rates.to(self.device), pairs.to(self.device)

    # --------------------------------------------------------------------------------- training

    def bundle_order(self, bundles: list[tuple[int, ...]], rng: random.Random) -> list[tuple[int, ...]]:
        """The order the decoder is taught to emit a session's bundles in: by first item, or (with
        ``bgn_shuffle_bundles``) a random one each epoch, so that any bundle not yet emitted is a
        right next answer (the original's list has no order either) and the beam may start with
        the one the model is surest of."""
        if self.shuffle_bundles:
            bundles = list(bundles)
            rng.shuffle(bundles)
        return bundles

    def session_loss(self, sessions: Sequence[Session], rng: random.Random) -> torch.Tensor:
        """Teacher-forced cross-entropy of every decoding step (see the module docstring)."""
        items, mask, pair = self.encode(sessions)
        batch, n, h = items.shape
        tables = [step_masks(len(s), self.bundle_order(target_sequence(s), rng)) for s in sessions]
        steps = max(len(t[0]) for t in tables)
        dev = self.device
        targets = torch.full((batch, steps), -100, dtype=torch.long, device=dev)
        allowed = torch.zeros(batch, steps, 1 + n, dtype=torch.bool, device=dev)
        covered = torch.zeros(batch, steps, n, device=dev)
        current = torch.zeros(batch, steps, n, device=dev)
        lengths = torch.zeros(batch, steps, dtype=torch.long, device=dev)
        inputs = torch.zeros(batch, steps, h, device=dev)
        for b, (tgt, ok, cov, cur, lens) in enumerate(tables):
            t, m = len(tgt), len(cov[0])
            targets[b, :t] = torch.tensor(tgt)
            allowed[b, :t, : 1 + m] = torch.tensor(ok)
            covered[b, :t, :m] = torch.tensor(cov)
            current[b, :t, :m] = torch.tensor(cur)
            lengths[b, :t] = torch.tensor(lens)
            # Inputs: START, then each step's target (an item's context vector or END's input).
            inputs[b, 0] = self.start
            for k, token in enumerate(tgt[:-1]):
                inputs[b, k + 1] = self.end_input if token == END else items[b, token - 1]
        # Padded steps come after every real one, and the GRU is causal: they change nothing.
        states, _ = self.decoder(self.drop(inputs), self.initial_state(items, mask)[None])
        scores = self.logits(self.drop(states), items[:, None], pair[:, None], covered,
                             current, lengths)
        scores = scores.masked_fill(~allowed, _NEG)
        return nn.functional.cross_entropy(scores.reshape(-1, 1 + n), targets.reshape(-1), ignore_index=-100)

    # ------------------------------------------------------------------------------- generation

    def _step(self, state: torch.Tensor, token_input: torch.Tensor) -> torch.Tensor:
        return self.decoder(token_input[:, None], state[None])[1][0]

    @torch.no_grad()
    def decode(self, session: Session, diversity: float) -> list[Decoded]:
        """Bundles of one session in generation order, up to ``bgn_max_bundles``, each with its
        score and END's log-probability before it: the stopping rules are applied by
        :func:`stop_early` (so tuning can try thresholds without decoding again)."""
        n = len(session)
        if n < 2:
            return []
        items, mask, pair = self.encode([session])
        items, pair = items[0], pair[0]
        state = self._step(self.initial_state(items[None], mask), self.start[None])[0]
        used = torch.zeros(n, device=self.device)
        out: list[Decoded] = []
        for k in range(self.max_bundles):
            stop, best = self._beam(state, items, pair, used, diversity, first=(k == 0))
            if best is None:
                break
            out.append(Decoded(best.items, best.score, stop))
            used[list(best.items)] = 1.0
            state = self._step(best.state[None], self.end_input[None])[0]
        return out

    def _beam(self, state: torch.Tensor, items: torch.Tensor, pair: torch.Tensor, used: torch.Tensor,
              diversity: float, first: bool) -> tuple[float | None, _Hyp | None]:
        """Beam search for one bundle: END's log-probability at its first step (``None`` before the
        first bundle) and the best finished bundle of >= 2 items (``None`` if none finishes)."""
        n = items.shape[0]
        beam, finished, stop = [_Hyp((), state, 0.0)], [], None
        while beam:
            states = torch.stack([hyp.state for hyp in beam])
            current = torch.zeros(len(beam), n, device=self.device)
            allowed = torch.zeros(len(beam), 1 + n, dtype=torch.bool, device=self.device)
            for r, hyp in enumerate(beam):
                current[r, list(hyp.items)] = 1.0
                allowed[r, 0] = len(hyp.items) >= 2 or (not hyp.items and not first)
                allowed[r, 2 + (hyp.items[-1] if hyp.items else -1):] = True
            lengths = torch.tensor([len(hyp.items) for hyp in beam], device=self.device)
            logp = torch.log_softmax(self.logits(states, items.expand(len(beam), -1, -1),
                                                 pair.expand(len(beam), -1, -1),
                                                 used.expand(len(beam), -1), current, lengths)
                                     .masked_fill(~allowed, _NEG), dim=-1)
            # The diversity term: each item already in an earlier bundle costs `diversity`.
            gain = logp - diversity * torch.cat([torch.zeros(1, device=self.device), used])
            expansions = []
            gains, oks = gain.tolist(), allowed.tolist()  # plain floats: per-element tensor reads are slow
            for r, hyp in enumerate(beam):
                for c in (c for c, ok in enumerate(oks[r]) if ok):
                    if c == END and not hyp.items:
                        stop = float(logp[r, END])  # "no more bundles": compared by the caller
                    elif c == END:
                        finished.append(_Hyp(hyp.items, hyp.state, hyp.score + gains[r][END]))
                    else:
                        expansions.append((hyp.score + gains[r][c], r, c - 1))
            expansions.sort(key=lambda e: -e[0])
            expansions = expansions[: self.beam_size]
            best_done = max((hyp.score for hyp in finished), default=-math.inf)
            # Scores only fall as a bundle grows: a hypothesis below the best finished one is lost.
            expansions = [e for e in expansions if e[0] > best_done]
            if not expansions:
                break
            inputs = items[[i for _, _, i in expansions]]
            new_states = self._step(torch.stack([beam[r].state for _, r, _ in expansions]), inputs)
            beam = [_Hyp(beam[r].items + (i,), s, score) for (score, r, i), s in zip(expansions, new_states)]
        best = max(finished, key=lambda hyp: hyp.score, default=None)
        return stop, best

    def generate_bundles(self, sessions: Sequence[Session]) -> list[BundlePrediction]:
        out = []
        for session in sessions:
            decoded = stop_early(self.decode(session, self.diversity), self.stop_probability, self.threshold)
            bundles = [tuple(session.item_ids[i] for i in d.items) for d in decoded]
            out.append(BundlePrediction(
                session.session_id, bundles or [tuple(session.item_ids)],
                failure=None if bundles else "no bundle of two or more items: the whole session",
                details={"scores": [round(d.score, 4) for d in decoded]}))
        return out

    # ----------------------------------------------------------------------------------- tuning

    def tune(self, valid_sessions: Sequence[Session]) -> dict[str, Any] | None:
        """Pick the diversity weight, END's stop probability and the threshold by exact F1 (ties:
        best Jaccard, then grid order) on the valid sessions; decoding runs once per diversity
        weight (the stopping rules only cut its list)."""
        from recbole_bundlellm.evaluation.bundle_metrics import compute_bundle_metrics

        sessions = [s for s in valid_sessions if s.bundles]
        if not self.config["bgn_tune"] or not sessions:
            return None
        truths = [list(s.bundles) for s in sessions]
        best: tuple[tuple[float, float, float], tuple[float, float]] | None = None
        self.eval()
        for diversity in self.tune_diversity:
            decoded = [self.decode(s, diversity) for s in sessions]
            for stop in self.tune_stop:
                for threshold in self.tune_thresholds:
                    preds = [[frozenset(s.item_ids[i] for i in d.items) for d in stop_early(ds, stop, threshold)]
                             for s, ds in zip(sessions, decoded)]
                    m = compute_bundle_metrics([p or [frozenset(s.item_ids)] for p, s in zip(preds, sessions)], truths)
                    if best is None or (m["exact_f1"], m["best_jaccard"]) > best[1]:
                        best = ((diversity, stop, threshold), (m["exact_f1"], m["best_jaccard"]))
        assert best is not None  # __init__ refused empty grids
        (self.diversity, self.stop_probability, self.threshold), (f1, jaccard) = best
        chosen = {"diversity": self.diversity, "stop_probability": self.stop_probability,
                  "threshold": _show(self.threshold), "valid_exact_f1": round(f1, 4),
                  "valid_best_jaccard": round(jaccard, 4), "valid_sessions": len(sessions)}
        self.run_info.update(chosen, tuned=True)  # the trainer's "training" entry stays
        return chosen


def stop_early(decoded: Sequence[Decoded], stop_probability: float, threshold: float) -> list[Decoded]:
    """The bundles kept: the first always; later ones until END wins (its probability at the
    bundle's first step reaches ``stop_probability``) or a bundle scores below ``threshold``."""
    kept = list(decoded[:1])
    stop_logp = math.log(stop_probability) if stop_probability > 0 else -math.inf
    for d in decoded[1:]:
        if (d.stop_logp is not None and d.stop_logp >= stop_logp) or d.score < threshold:
            break
        kept.append(d)
    return kept


def validate_settings(config: Any) -> None:
    """What one ranges.yaml row cannot say: tuning (``bgn_tune``) needs every grid non-empty."""
    if config["bgn_tune"] and not all(config[key] for key in TUNE_GRIDS):
        raise SettingsError(f"bgn_tune needs non-empty {', '.join(TUNE_GRIDS)} lists")


def _threshold(value: float | None) -> float:
    """A log-probability threshold (checked by its row); ``~`` (None) means none."""
    return -math.inf if value is None else float(value)


def _show(threshold: float) -> float | None:
    return None if threshold == -math.inf else threshold


__all__ = ["BGN", "Decoded", "END", "step_masks", "stop_early", "target_sequence"]
