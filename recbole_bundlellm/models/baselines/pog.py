"""POG: a transformer encoder-decoder that generates a session's bundles item by item.

After Chen et al., "POG: Personalized Outfit Generation for Fashion Recommendation at Alibaba
iFashion" (KDD 2019), adapted, as the AICL paper did, to find bundles *inside* one session.

How it follows the original:

* **Multi-modal item embeddings** summed into one vector per item: the original sums image,
  text and collaborative embeddings; here the title vector (``ItemFeaturizer``: TF-IDF + SVD,
  projected to ``pog_d_model``) and a leaf-category embedding, plus a (sinusoidal) position.
* **Encoder-decoder transformer**: the encoder reads a context of items (the original: the
  user's clicked items; here: the session's items), the decoder generates the outfit (here: the
  bundles) one item at a time, attending to what it has generated so far (causal self-attention)
  and to the encoded context (cross-attention).
* **Compatibility** is learned by predicting the next item of a ground-truth outfit from the
  items already in it (the original pre-trains it with masked-item prediction, "FOM"; here it is
  learned jointly, with teacher forcing on the ground-truth bundles and cross-entropy).

Where it must differ:

* **Pointer output instead of a vocabulary softmax.** Test sessions hold items no training
  session has, so an output layer over item ids cannot work; each step points at one of the
  session's encoded items (a pointer network: scaled dot product of the decoder state with the
  encoded items), or at two special tokens, END (close the current bundle) and STOP (no more
  bundles). The decoder's input for an item is its encoder output.
* **Several bundles per session**: the target is the session's bundles in order of their first
  item, the items of each in session order, each closed by END, then STOP. Items already used are
  masked (bundles are disjoint); END is allowed only after two or more items (a bundle has two),
  STOP only between bundles. Ground-truth bundles that share items (about 15% of the sessions)
  are made disjoint for training: a later bundle loses the items an earlier one took, and is
  dropped if fewer than two remain.
* **Training categories** (``pog_train_categories: predicted``, the default): only training-bundle
  items carry their raw leaf category, every other item (all valid and test items) one predicted
  from its title; they are re-predicted out of fold for training (Pairwise's helper), so that the
  kind of leaf does not tell the model which training items are in a bundle.
* **No user**: the original's personalisation (the user's history as the encoder input) is the
  session itself here.
* **Decoding**: greedy with the masks above; a bundle that cannot be closed with two items is
  dropped; a session left without any bundle gets the ``pog_fallback`` (the whole session, or no
  bundle: a failed session). :meth:`POG.tune` picks additive biases on the END and STOP logits
  (how long and how many bundles) and the fallback by exact F1 on the valid sessions, as
  Pairwise tunes its threshold.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.models.base import BundlePrediction
from recbole_bundlellm.models.baselines.neural import NeuralBundleModel, SessionFeatures
from recbole_bundlellm.settings import SettingsError, check_row, check_rows

#: Offsets of the special candidates after a batch's item slots (``n_max + END``, ``n_max + STOP``).
END, STOP = 0, 1


@dataclass(frozen=True)
class Decoding:
    """How greedy decoding turns logits into bundles: biases added to the END and STOP logits and
    what a session without a bundle gets."""

    end_bias: float = 0.0
    stop_bias: float = 0.0
    fallback: str = "whole"

    def __post_init__(self) -> None:
        # Built in code (from the keys and the tuning grid): the guard of the row pog_fallback.
        check_row("pog_fallback", self.fallback)


def training_bundles(session: Session) -> list[list[int]]:
    """The ground-truth bundles as disjoint lists of positions, in the order the decoder learns
    them: by first item, items in session order; an item already taken by an earlier bundle is
    left out of a later one, which is dropped if fewer than two items remain."""
    positions = session.positions
    ordered = sorted((sorted(positions[i] for i in b if i in positions) for b in session.bundles),
                     key=lambda b: (b[0] if b else len(session), b))
    used: set[int] = set()
    out = []
    for bundle in ordered:
        left = [p for p in bundle if p not in used]
        if len(left) >= 2:
            out.append(left)
            used.update(left)
    return out


def target_sequence(bundles: Sequence[Sequence[int]], n_slots: int) -> list[int]:
    """The decoder's targets: item positions, ``n_slots + END`` after each bundle, ``n_slots +
    STOP`` at the end (``n_slots``: item slots of the batch)."""
    out: list[int] = []
    for bundle in bundles:
        out.extend(bundle)
        out.append(n_slots + END)
    return out + [n_slots + STOP]


def allowed(n_items: int, n_slots: int, used: set[int], current: int) -> list[bool]:
    """Which candidates (``n_slots`` item slots, END, STOP) may come next: unused items of the
    session; END once the open bundle has two items; STOP only when no bundle is open."""
    mask = [i < n_items and i not in used for i in range(n_slots)]
    return mask + [current >= 2, current == 0]


def sinusoid(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """The transformer's fixed sinusoidal position encodings ``[length, dim]`` (no length limit)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return table


def validate_settings(config: Any) -> None:
    """What one ranges.yaml row cannot say: attention splits ``pog_d_model`` over ``pog_heads``, and
    the sinusoidal positions fill it in sine/cosine pairs."""
    d_model, heads = config["pog_d_model"], config["pog_heads"]
    if d_model % heads or d_model % 2:
        raise SettingsError(f"pog_d_model={d_model} must be even and divisible by pog_heads={heads}")


class POG(NeuralBundleModel):
    """Encoder over the session's items, pointer decoder over them (see the module docstring);
    the ``pog_*`` keys of ``POG.yaml`` size it."""

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        check_rows(config, "pog_")  # ranges.yaml: BundleConfig checked them; a plain mapping was not
        validate_settings(config)
        self.d_model = int(config["pog_d_model"])
        self.heads = int(config["pog_heads"])
        self.encoder_layers = int(config["pog_encoder_layers"])
        self.decoder_layers = int(config["pog_decoder_layers"])
        self.ff_dim = int(config["pog_ff_dim"])
        self.dropout = float(config["pog_dropout"])
        self.train_categories = str(config["pog_train_categories"])
        self._predicted: list[Session] | None = None
        self.decoding = Decoding(float(config["pog_end_bias"]), float(config["pog_stop_bias"]),
                                 str(config["pog_fallback"]))
        self.tune_grid = ([float(v) for v in config["pog_tune_end_biases"]],
                          [float(v) for v in config["pog_tune_stop_biases"]],
                          [str(f) for f in config["pog_tune_fallbacks"]])
        self.run_info = {"decoding": asdict(self.decoding), "tuned": False}

    def build(self) -> None:
        d = self.d_model
        self.title_proj = nn.Linear(self.items.dim, d)
        self.category = nn.Embedding(self.items.n_categories, d, padding_idx=0)
        self.input_norm = nn.LayerNorm(d)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, self.heads, self.ff_dim, self.dropout, batch_first=True),
            self.encoder_layers, enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(d, self.heads, self.ff_dim, self.dropout, batch_first=True),
            self.decoder_layers)
        self.bos = nn.Parameter(torch.randn(d) * 0.1)  # decoder input before the first step
        self.end_token = nn.Parameter(torch.randn(d) * 0.1)  # decoder input after a bundle closed
        self.special_keys = nn.Parameter(torch.randn(2, d) * 0.1)  # pointer keys of END and STOP
        self.pick_proj = nn.Linear(d, d)  # an encoded item as the decoder's input
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)

    # ----- encoder and pointer scores -----

    def _encode(self, feats: Sequence[SessionFeatures]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoded items ``[B, n_max, d]`` and the padding mask ``[B, n_max]`` (True: no item)."""
        n_max = max(len(f.categories) for f in feats)
        device = self.device
        titles = torch.zeros(len(feats), n_max, self.items.dim, device=device)
        cats = torch.zeros(len(feats), n_max, dtype=torch.long, device=device)
        pad = torch.ones(len(feats), n_max, dtype=torch.bool, device=device)
        for b, f in enumerate(feats):
            n = len(f.categories)
            titles[b, :n], cats[b, :n], pad[b, :n] = f.titles, f.categories, False
        x = self.title_proj(titles) + self.category(cats) + sinusoid(n_max, self.d_model, device)
        return self.encoder(self.input_norm(x), src_key_padding_mask=pad), pad

    def _decoder_inputs(self, memory: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Decoder inputs ``[B, T, d]`` for previous tokens ``[B, T]`` (-1: BOS; item slot; or
        ``n_max + END``); padding steps may hold anything (their outputs are never read)."""
        n_max = memory.shape[1]
        picked = self.pick_proj(torch.gather(memory, 1, tokens.clamp(0, n_max - 1)[..., None].expand(
            -1, -1, memory.shape[2])))
        x = torch.where((tokens == -1)[..., None], self.bos, picked)
        x = torch.where((tokens >= n_max)[..., None], self.end_token, x)
        return x + sinusoid(tokens.shape[1], self.d_model, memory.device)

    def _logits(self, memory: torch.Tensor, pad: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Pointer logits ``[B, T, n_max + 2]`` (items, END, STOP) after each prefix of ``tokens``."""
        steps = tokens.shape[1]
        causal = torch.triu(torch.ones(steps, steps, dtype=torch.bool, device=memory.device), 1)
        h = self.decoder(self._decoder_inputs(memory, tokens), memory, tgt_mask=causal,
                         memory_key_padding_mask=pad)
        keys = torch.cat([memory, self.special_keys.expand(memory.shape[0], -1, -1)], dim=1)
        return self.query(h) @ self.key(keys).transpose(1, 2) / math.sqrt(self.d_model)

    # ----- training -----

    def fit_bundles(self, train_sessions: Sequence[Session]) -> None:
        super().fit_bundles(train_sessions)
        if self.train_categories == "predicted" and all(s.categories for s in train_sessions):
            # Only training-bundle items carry their raw leaf; every other item (valid and test
            # included) has one predicted from its title. Left as is, "raw-looking leaf" would
            # tell the model which training items are in a bundle: re-predict them out of fold.
            from recbole_bundlellm.models.baselines.pairwise import predicted_training_categories

            self._predicted = predicted_training_categories(train_sessions, folds=5, seed=int(self.config["seed"]))

    def training_sessions(self, sessions: Sequence[Session]) -> list[Session]:
        if self._predicted is not None and [s.session_id for s in sessions] == [s.session_id for s in self._predicted]:
            sessions = self._predicted
        return [s for s in super().training_sessions(sessions) if training_bundles(s)]

    def session_loss(self, sessions: Sequence[Session], rng: random.Random) -> torch.Tensor:
        """Cross-entropy of the next pointer under teacher forcing, over every step of the batch."""
        feats = [self.features(s) for s in sessions]
        memory, pad = self._encode(feats)
        n_max = memory.shape[1]
        targets = [target_sequence(training_bundles(s), n_max) for s in sessions]
        steps = max(len(t) for t in targets)
        inputs = torch.full((len(sessions), steps), -1, dtype=torch.long)
        gold = torch.full((len(sessions), steps), -100, dtype=torch.long)  # -100: ignored (padding)
        masks = torch.zeros(len(sessions), steps, n_max + 2, dtype=torch.bool)
        for b, (s, target) in enumerate(zip(sessions, targets)):
            used: set[int] = set()
            current = 0
            for t, y in enumerate(target):
                masks[b, t] = torch.tensor(allowed(len(s), n_max, used, current))
                gold[b, t] = y
                if t + 1 < steps:
                    inputs[b, t + 1] = y
                if y < n_max:
                    used.add(y)
                    current += 1
                else:
                    current = 0
        device = memory.device
        logits = self._logits(memory, pad, inputs.to(device)).masked_fill(~masks.to(device), float("-inf"))
        # Padding steps have no allowed candidate; they are ignored, but must not give NaN.
        logits = logits.masked_fill((gold == -100)[..., None].to(device), 0.0)
        return nn.functional.cross_entropy(logits.reshape(-1, n_max + 2), gold.reshape(-1).to(device),
                                           ignore_index=-100)

    # ----- generation -----

    @torch.no_grad()
    def decode(self, sessions: Sequence[Session], decoding: Decoding) -> list[list[tuple[int, ...]]]:
        """Greedy decoding of a batch: each session's bundles as tuples of positions (before the
        fallback)."""
        if not sessions:
            return []
        feats = [self.features(s) for s in sessions]
        memory, pad = self._encode(feats)
        n_max = memory.shape[1]
        bias = torch.zeros(n_max + 2, device=memory.device)
        bias[n_max + END], bias[n_max + STOP] = decoding.end_bias, decoding.stop_bias
        used: list[set[int]] = [set() for _ in sessions]
        current: list[list[int]] = [[] for _ in sessions]
        bundles: list[list[tuple[int, ...]]] = [[] for _ in sessions]
        done = [len(s) < 2 for s in sessions]
        tokens = torch.full((len(sessions), 1), -1, dtype=torch.long, device=memory.device)
        while not all(done):
            logits = self._logits(memory, pad, tokens)[:, -1] + bias
            masks = [allowed(len(s), n_max, used[b], len(current[b])) for b, s in enumerate(sessions)]
            logits = logits.masked_fill(~torch.tensor(masks, device=memory.device), float("-inf"))
            choice = logits.argmax(dim=1).tolist()
            for b in range(len(sessions)):
                if done[b]:
                    continue
                if not any(masks[b]):  # one item open and none left: it cannot make a bundle
                    done[b] = True
                elif choice[b] < n_max:
                    used[b].add(choice[b])
                    current[b].append(choice[b])
                elif choice[b] == n_max + END:
                    bundles[b].append(tuple(current[b]))
                    current[b] = []
                else:
                    done[b] = True
            tokens = torch.cat([tokens, torch.tensor(choice, device=memory.device)[:, None]], dim=1)
        return bundles

    def _predictions(self, sessions: Sequence[Session], decoding: Decoding,
                     batch_size: int = 256) -> list[list[tuple[int, ...]]]:
        """Decoded bundles per session with the fallback applied (positions)."""
        out: list[list[tuple[int, ...]]] = []
        for start in range(0, len(sessions), batch_size):
            chunk = sessions[start:start + batch_size]
            for s, bundles in zip(chunk, self.decode(chunk, decoding)):
                if not bundles and decoding.fallback == "whole" and len(s) >= 2:
                    bundles = [tuple(range(len(s)))]
                out.append(bundles)
        return out

    def generate_bundles(self, sessions: Sequence[Session]) -> list[BundlePrediction]:
        self.eval()
        out = []
        for s, bundles in zip(sessions, self._predictions(list(sessions), self.decoding)):
            out.append(BundlePrediction(s.session_id, [tuple(s.item_ids[i] for i in b) for b in bundles],
                                        failure=None if bundles else "no bundle decoded"))
        return out

    def tune(self, valid_sessions: Sequence[Session]) -> dict[str, Any] | None:
        """Pick the END / STOP biases and the fallback by (exact F1, best Jaccard) on the valid
        sessions; the first in grid order wins ties."""
        from recbole_bundlellm.evaluation.bundle_metrics import compute_bundle_metrics

        sessions = [s for s in valid_sessions if s.bundles]
        if not self.config["pog_tune"] or not sessions:
            return None
        self.eval()
        truths = [list(s.bundles) for s in sessions]
        best: tuple[Decoding, float, float] | None = None
        end_biases, stop_biases, fallbacks = self.tune_grid
        for end_bias in end_biases:
            for stop_bias in stop_biases:
                decoded = self._predictions(sessions, Decoding(end_bias, stop_bias, "none"))
                for fallback in fallbacks:
                    preds = [[frozenset(s.item_ids[i] for i in b) for b in bundles]
                             or ([frozenset(s.item_ids)] if fallback == "whole" else [])
                             for s, bundles in zip(sessions, decoded)]
                    m = compute_bundle_metrics(preds, truths)
                    if best is None or (m["exact_f1"], m["best_jaccard"]) > (best[1], best[2]):
                        best = (Decoding(end_bias, stop_bias, fallback), m["exact_f1"], m["best_jaccard"])
        assert best is not None  # the grid lists are non-empty (checked in __init__)
        self.decoding = best[0]
        chosen = {"decoding": asdict(self.decoding), "valid_exact_f1": round(best[1], 4),
                  "valid_best_jaccard": round(best[2], 4), "valid_sessions": len(sessions)}
        self.run_info.update(chosen, tuned=True)  # keeps what the trainer recorded ("training")
        return chosen


__all__ = ["POG", "Decoding", "allowed", "target_sequence", "training_bundles"]
