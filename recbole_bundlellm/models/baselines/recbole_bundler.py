"""RecBoleBundler: any RecBole item-scoring model as a bundle generator (no LLM).

Researchers can put "SASRec-as-bundler" rows beside the LLM rows, on the same split.

* **Training.** ``bundler_model`` (a RecBole general or sequential model: ItemKNN, BPR, LightGCN,
  SASRec, ...) is trained inside :meth:`RecBoleBundler.fit_bundles` with RecBole's own machinery
  (``create_dataset``, ``data_preparation``, its Trainer with its early stopping, the best epoch
  reloaded) on the next-item view of the *training sessions only*: the same
  ``<dataset>_next`` atomic file and ``properties/next_item.yaml`` settings as ``bundlellm run``
  uses for RecBole models, written to a temporary folder from the training split (the prepared
  ``<dataset>_next`` holds every split's sessions, so it would leak valid and test). RecBole keeps
  the last item of each session for its early-stopping metric (``LS: valid_only``); everything
  else trains.
* **Item-item affinity** (``bundler_affinity: auto`` picks the first that applies):

  - ``similarity``: the model's own item x item matrix, made symmetric by the max of both
    directions: ``w`` (ItemKNN, top-k cosine of co-occurrence), ``item_similarity`` (EASE,
    SLIMElastic, ADMMSLIM).
  - ``embedding``: cosine of item embeddings: graph models whose ``forward()`` takes no input
    (LightGCN, NGCF, ...) give their propagated item table (``forward()[1]``); otherwise the
    ``item_embedding`` table (BPR, SASRec, GRU4Rec, ...).
  - ``scores``: sequential models only: ``full_sort_predict`` of each one-item history, the two
    directions averaged (computed once for every seen item: a seen x all-items matrix in memory).

* **Unseen items** (in no training interaction of the inner model, so their row is untrained or
  absent): ``bundler_unseen: title`` gives their pairs the TF-IDF cosine of the titles (word 1-2
  grams fit on training titles), ``zero`` gives them the lowest affinity. ``run_info['unseen']``
  counts them.
* **Pair probabilities in [0, 1]** (``bundler_scale``): ``rank`` maps an affinity to the share of
  *reference pairs* with a strictly lower one (an empirical CDF, so the threshold grid spreads
  evenly whatever the model's score range); model affinities and title cosines each have their
  own reference. The reference pairs are all pairs of the valid sessions once :meth:`tune` ran
  (items only, no labels: like test sessions, the inner model never saw them together), else of
  the training sessions. ``minmax`` additionally stretches each session's matrix to [0, 1] (its
  weakest pair 0, its strongest 1; a flat session is all 0).
* **Grouping** is Pairwise's (:func:`~recbole_bundlellm.models.baselines.pairwise.group_pairs`), and so is
  the tuning on valid (:func:`~recbole_bundlellm.models.baselines.pairwise.tune_grouping`, every scale of
  ``bundler_tune_scales`` tried too).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

import recbole_bundlellm  # noqa: F401  (compat patches before recbole)
from recbole.config import Config

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.lookup import did_you_mean
from recbole_bundlellm.models.base import BundleGenerator, BundlePrediction
from recbole_bundlellm.models.baselines.pairwise import Grouping, grouped_prediction, tune_grouping

AFFINITIES = ("auto", "similarity", "embedding", "scores")
UNSEEN = ("title", "zero")
SCALES = ("rank", "minmax")
#: RecBole's model packages whose models score items from a user's interactions alone.
ITEM_SCORING_PACKAGES = ("general_recommender", "sequential_recommender")
#: The ones that need more than sessions (features, a knowledge graph).
OTHER_PACKAGES = ("context_aware_recommender", "knowledge_aware_recommender")


class BundlerModelError(BundleLLMError, ValueError):
    """``bundler_model`` names no RecBole item-scoring model, or one that gives no item affinity."""


def _package_models(package: str) -> list[str]:
    """Model class names a RecBole model package exports, read from its ``__init__.py`` (importing
    the package would import all its models)."""
    from recbole_bundlellm.extension.registry import _recbole_model_dir

    init = _recbole_model_dir() / package / "__init__.py"
    text = init.read_text(encoding="utf-8") if init.is_file() else ""
    return re.findall(r"^from \S+ import (\w+)", text, flags=re.MULTILINE)


@functools.lru_cache(maxsize=1)
def item_scoring_models() -> tuple[str, ...]:
    """RecBole's general and sequential model names (what ``bundler_model`` may be)."""
    return tuple(sorted({m for p in ITEM_SCORING_PACKAGES for m in _package_models(p)}))


def resolve_bundler_model(name: str) -> type:
    """The RecBole model class ``bundler_model`` names; a clear error otherwise."""
    choices = item_scoring_models()
    if name in choices:
        from recbole.utils import get_model

        return get_model(name)
    for package in OTHER_PACKAGES:
        if name in _package_models(package):
            raise BundlerModelError(
                f"bundler_model: '{name}' is RecBole's {package.split('_recommender')[0].replace('_', '-')} "
                "model: it needs more than sessions to score items; use a general or sequential model "
                "(e.g. ItemKNN, BPR, LightGCN, SASRec)")
    raise BundlerModelError(f"bundler_model: '{name}' is not a RecBole item-scoring model (general or "
                            f"sequential, e.g. ItemKNN, BPR, LightGCN, SASRec){did_you_mean(name, choices)}")


#: The settings ``bundlellm run`` gives RecBole models on a ``<domain>_next`` dataset.
NEXT_ITEM_YAML = Path(__file__).resolve().parents[2] / "properties" / "next_item.yaml"


class NextItemConfig(Config):
    """RecBole's Config without its command line: ``sys.argv`` holds the outer run's ``--key=value``
    overrides, which RecBole would apply to the inner model too (a module-level class, because
    RecBole pickles the config into its checkpoints)."""

    def _load_cmd_line(self) -> dict[str, Any]:
        return {}


def _setting(config: Any, key: str, default: Any = None) -> Any:
    """``config[key]`` for RecBole's Config and plain dicts alike (RecBole's answers None when absent)."""
    try:
        value = config[key]
    except KeyError:
        return default
    return default if value is None else value


def _percentile(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Share of ``reference`` (sorted) strictly below each value; 0 with no reference."""
    if reference.size == 0:
        return np.zeros_like(values, dtype=float)
    return np.searchsorted(reference, values, side="left") / reference.size


class ItemAffinity:
    """Raw item-item affinity from a trained RecBole model (see the module for the sources)."""

    def __init__(self, model: Any, dataset: Any, seen: set[str], kind: str) -> None:
        import torch

        self.model, self.seen = model, seen
        self.index = {str(tok): i for i, tok in enumerate(dataset.field2id_token[dataset.iid_field])}
        self.kind, self.source = self._choose(model, kind)
        self._sim: Any = None
        self._emb: np.ndarray | None = None
        with torch.no_grad():
            if self.kind == "similarity":
                import scipy.sparse as sp

                sim = getattr(model, self.source)
                sim = sp.csr_matrix(sim) if not sp.issparse(sim) else sim.tocsr()
                self._sim = sim.maximum(sim.T).tocsr()  # ItemKNN keeps each item's top-k only
            elif self.kind == "embedding":
                table = model.forward()[1] if self.source == "forward()[1]" else model.item_embedding.weight
                emb = table.detach().float().cpu().numpy()
                norm = np.linalg.norm(emb, axis=1, keepdims=True)
                self._emb = emb / np.where(norm > 0, norm, 1.0)
            else:  # scores: every seen item's one-item history once, in batches (seen x all items)
                rows = sorted(self.index[x] for x in seen)
                self._row = {i: r for r, i in enumerate(rows)}
                self._scores = np.concatenate([self._one_item_scores(rows[k:k + 512])
                                               for k in range(0, len(rows), 512)]) if rows else np.zeros((0, 0))

    @staticmethod
    def _choose(model: Any, kind: str) -> tuple[str, str]:
        import torch

        from recbole.utils import ModelType

        name = type(model).__name__
        similarity = next((a for a in ("w", "item_similarity") if getattr(model, a, None) is not None
                           and hasattr(getattr(model, a), "shape")), None)
        embedding = None
        if isinstance(getattr(model, "item_embedding", None), torch.nn.Embedding):
            takes_nothing = len(inspect.signature(model.forward).parameters) == 0
            embedding = "forward()[1]" if takes_nothing else "item_embedding"
        sequential = model.type == ModelType.SEQUENTIAL
        found = {"similarity": similarity, "embedding": embedding, "scores": "full_sort_predict" if sequential else None}
        order = ("similarity", "embedding", "scores") if kind == "auto" else (kind,)
        for k in order:
            if found[k]:
                return k, found[k]
        raise BundlerModelError(
            f"bundler_model: {name} gives no item-item affinity of kind '{kind}' (it has no item similarity "
            "matrix, no item_embedding table and is not sequential); try bundler_affinity: auto or another model")

    def describe(self) -> str:
        return {"similarity": f"similarity matrix `{self.source}` (max of both directions)",
                "embedding": f"cosine of the item embeddings `{self.source}`",
                "scores": "full_sort_predict of one-item histories (both directions averaged)"}[self.kind]

    def matrix(self, items: Sequence[str]) -> np.ndarray:
        """Symmetric n x n affinity of ``items``; NaN where either item is unseen (diagonal 0)."""
        n = len(items)
        known = [k for k, x in enumerate(items) if x in self.seen]  # seen items all have an index
        out = np.full((n, n), np.nan)
        if known:
            idx = np.array([self.index[items[k]] for k in known])
            out[np.ix_(known, known)] = self._block(idx)
        np.fill_diagonal(out, 0.0)
        return out

    def _block(self, idx: np.ndarray) -> np.ndarray:
        if self.kind == "similarity":
            return self._sim[idx][:, idx].toarray().astype(float)
        if self.kind == "embedding":
            return self._emb[idx] @ self._emb[idx].T
        block = self._scores[[self._row[i] for i in idx]][:, idx]
        return (block + block.T) / 2

    def _one_item_scores(self, idx: Sequence[int]) -> np.ndarray:
        """``full_sort_predict`` of the one-item histories [i] (rows) over every item (columns)."""
        import torch

        from recbole.data.interaction import Interaction

        model = self.model
        seq = torch.zeros((len(idx), model.max_seq_length), dtype=torch.long)
        seq[:, 0] = torch.as_tensor(idx)
        batch = Interaction({model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: torch.ones(len(idx), dtype=torch.long)})
        return model.full_sort_predict(batch.to(model.device)).view(len(idx), -1).float().cpu().numpy()


def train_next_item_model(name: str, sessions: Sequence[Session], config: Any,
                          workdir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """Train RecBole's ``name`` on the next-item view of ``sessions`` in ``workdir``; returns the
    model (best epoch), its training dataset and what the training recorded."""
    import torch

    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_trainer, init_seed

    from recbole_bundlellm.data.atomic import NEXT_HEADER, next_item_rows, write_atomic_table

    cls = resolve_bundler_model(name)
    dataset = f"{_setting(config, 'dataset', 'bundles')}_next"
    (workdir / dataset).mkdir(parents=True)
    write_atomic_table(workdir / dataset / f"{dataset}.inter", NEXT_HEADER,
                       next_item_rows({s.session_id: list(s.item_ids) for s in sessions}))
    seed = int(_setting(config, "seed", 2020))
    settings: dict[str, Any] = {
        "data_path": str(workdir), "checkpoint_dir": str(workdir / "checkpoints"),
        "epochs": int(config["bundler_epochs"]), "learning_rate": float(config["bundler_learning_rate"]),
        "train_batch_size": int(config["bundler_batch_size"]), "stopping_step": int(config["bundler_stopping_step"]),
        "seed": seed, "reproducibility": bool(_setting(config, "reproducibility", True)),
        "use_gpu": bool(_setting(config, "use_gpu", True)), "gpu_id": _setting(config, "gpu_id", "0"),
        "show_progress": False,
        # The last item of each session scores RecBole's early stopping; no test part is needed.
        "eval_args": {"split": {"LS": "valid_only"}, "group_by": "user", "order": "TO", "mode": "full"},
        **dict(config["bundler_model_args"] or {}),
    }
    try:
        inner = NextItemConfig(cls, dataset, [str(NEXT_ITEM_YAML)], settings)
    except ValueError as exc:
        # RecBole's rule: a sequential model trained with the CE loss samples no negatives.
        if "should be None when the loss_type is CE" not in str(exc) or "train_neg_sample_args" in settings:
            raise
        inner = NextItemConfig(cls, dataset, [str(NEXT_ITEM_YAML)], {**settings, "train_neg_sample_args": None})
    # RecBole ignores keys it does not know: a typo would silently train the default model.
    known = inner.internal_config_dict
    for key in config["bundler_model_args"] or {}:
        if key not in known:
            raise BundlerModelError(f"bundler_model_args: '{key}' is no RecBole setting of {name}"
                                    f"{did_you_mean(key, known)}")
    init_seed(seed, inner["reproducibility"])
    built = create_dataset(inner)
    train_data, valid_data, _ = data_preparation(inner, built)
    init_seed(seed, inner["reproducibility"])
    model = cls(inner, train_data.dataset).to(inner["device"])
    start = time.perf_counter()
    with contextlib.chdir(workdir):  # RecBole's Trainer writes ./log_tensorboard
        trainer = get_trainer(inner["MODEL_TYPE"], name)(inner, model)
        try:
            best, _ = trainer.fit(train_data, valid_data, verbose=True, saved=True, show_progress=False)
        finally:  # its writer would flush into the temporary folder after it is gone
            trainer.tensorboard.close()
    if Path(trainer.saved_model_file).is_file():  # reload the best epoch, as RecBole's evaluate does
        # Our own checkpoint, just written: RecBole pickles its Config into it (not weights only).
        checkpoint = torch.load(trainer.saved_model_file, map_location=inner["device"], weights_only=False)
        model.load_state_dict(checkpoint["state_dict"])
        model.load_other_parameter(checkpoint.get("other_parameter"))
    model.eval()
    info = {"train_seconds": round(time.perf_counter() - start, 2),
            "epochs_run": len(getattr(trainer, "train_loss_dict", {})) or None,
            f"best_valid_{inner['valid_metric'].lower()}": None if best is None else round(float(best), 4)}
    info = {k: v for k, v in info.items() if v is not None}
    return model, train_data.dataset, info


def trained_items(dataset: Any) -> set[str]:
    """Raw ids of the items in a RecBole training dataset's interactions (targets and histories)."""
    tokens = dataset.field2id_token[dataset.iid_field]
    inter = dataset.inter_feat
    ids: set[int] = set()
    for field in (dataset.iid_field, dataset.iid_field + dataset.config["LIST_SUFFIX"]):
        if field in inter:
            ids.update(int(i) for i in inter[field].flatten().tolist())
    ids.discard(0)  # [PAD]
    return {str(tokens[i]) for i in ids}


class RecBoleBundler(BundleGenerator):
    """A RecBole model's item affinity + Pairwise's grouping; the ``bundler_*`` keys of
    ``RecBoleBundler.yaml`` set it up."""

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        self.model_name = str(config["bundler_model"])
        resolve_bundler_model(self.model_name)  # fail before any data is read
        for key, allowed in (("bundler_affinity", AFFINITIES), ("bundler_unseen", UNSEEN), ("bundler_scale", SCALES)):
            if config[key] not in allowed:
                raise ValueError(f"{key} '{config[key]}' is not one of {list(allowed)}{did_you_mean(config[key], allowed)}")
        for scale in config["bundler_tune_scales"] or []:
            if scale not in SCALES:
                raise ValueError(f"bundler_tune_scales: '{scale}' is not one of {list(SCALES)}")
        self.grouping = Grouping(config["bundler_grouping"], float(config["bundler_threshold"]),
                                 config["bundler_fallback"])
        self.scale = str(config["bundler_scale"])
        self.affinity: ItemAffinity | None = None
        self._titles: Any = None  # TF-IDF of titles, for pairs with an unseen item
        self._reference: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0))
        self.unseen_counts: dict[str, dict[str, int]] = {}
        self.run_info = {"bundler_model": self.model_name, "grouping": asdict(self.grouping),
                         "scale": self.scale, "tuned": False}

    # ------------------------------------------------------------------ fit
    def fit_bundles(self, train_sessions: Sequence[Session]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        sessions = [s for s in train_sessions if len(s)]
        with tempfile.TemporaryDirectory(prefix="recbole_bundler-") as tmp:
            model, dataset, info = train_next_item_model(self.model_name, sessions, self.config, Path(tmp))
        seen = trained_items(dataset)
        self.affinity = ItemAffinity(model, dataset, seen, str(self.config["bundler_affinity"]))
        self._titles = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), strip_accents="unicode").fit(
            sorted({t for s in sessions for t in s.titles}))
        self.set_reference(sessions)
        self.run_info.update({
            "model_type": model.type.name.lower(), "affinity": self.affinity.describe(), **info,
            "items_trained": len(seen),
            "unseen": {"fallback": self.config["bundler_unseen"], "counts": self.unseen_counts},
        })

    def _raw(self, session: Session) -> tuple[np.ndarray, np.ndarray]:
        """Model affinity (NaN where an item is unseen) and title cosine of a session's items."""
        if self.affinity is None:
            raise RuntimeError("RecBoleBundler: fit_bundles must run before generation")
        x = self._titles.transform(list(session.titles))
        return self.affinity.matrix(session.item_ids), (x @ x.T).toarray()  # rows are L2-normalised

    def set_reference(self, sessions: Sequence[Session]) -> None:
        """Use the pairs of ``sessions`` as the reference of the ``rank`` scale (see the module)."""
        models, titles = [], []
        for s in sessions:
            if len(s) < 2:
                continue
            model, title = self._raw(s)
            upper = np.triu_indices(len(s), 1)
            values = model[upper]
            models.append(values[~np.isnan(values)])
            titles.append(title[upper])
        if models:
            self._reference = (np.sort(np.concatenate(models)), np.sort(np.concatenate(titles)))

    def probabilities(self, session: Session, scale: str | None = None) -> np.ndarray:
        """The symmetric n x n pair-probability matrix of a session (diagonal 0), see the module."""
        model, title = self._raw(session)
        unseen = np.isnan(model)
        prob = _percentile(np.nan_to_num(model), self._reference[0])
        if self.config["bundler_unseen"] == "title":
            prob = np.where(unseen, _percentile(title, self._reference[1]), prob)
        else:
            prob = np.where(unseen, 0.0, prob)
        np.fill_diagonal(prob, 0.0)
        if (scale or self.scale) == "minmax" and len(session) > 2:
            upper = prob[np.triu_indices(len(session), 1)]
            low, high = upper.min(), upper.max()
            prob = (prob - low) / (high - low) if high > low else np.zeros_like(prob)
            np.fill_diagonal(prob, 0.0)
        return prob

    def _count_unseen(self, stage: str, sessions: Sequence[Session]) -> None:
        """Add the sessions' unseen items to ``run_info['unseen']['counts'][stage]``."""
        seen = self.affinity.seen if self.affinity else set()
        counts = self.unseen_counts.setdefault(stage, {"sessions": 0, "items": 0, "unseen": 0,
                                                       "sessions_with_unseen": 0})
        for s in sessions:
            missing = sum(x not in seen for x in s.item_ids)
            counts["sessions"] += 1
            counts["items"] += len(s)
            counts["unseen"] += missing
            counts["sessions_with_unseen"] += int(missing > 0)

    # ------------------------------------------------------------------ tune / generate
    def tune(self, valid_sessions: Sequence[Session]) -> dict[str, Any] | None:
        """Set the rank reference to the valid pairs, then pick scale, grouping, fallback and
        threshold by exact F1 on the valid sessions (as Pairwise does)."""
        self.set_reference(valid_sessions)
        self.run_info["reference"] = "valid"
        self._count_unseen("tune", valid_sessions)
        if not self.config["bundler_tune"]:
            return None
        sessions = [s for s in valid_sessions if s.bundles]
        if not sessions:
            return None
        best: tuple[str, Grouping, float, float] | None = None
        for scale in self.config["bundler_tune_scales"] or [self.scale]:
            probs = [self.probabilities(s, scale) for s in sessions]
            grouping, f1, jaccard = tune_grouping(probs, sessions, self.config["bundler_tune_groupings"],
                                                  self.config["bundler_tune_fallbacks"],
                                                  self.config["bundler_tune_thresholds"])
            if best is None or (f1, jaccard) > (best[2], best[3]):
                best = (scale, grouping, f1, jaccard)
        self.scale, self.grouping, f1, jaccard = best
        chosen = {"scale": self.scale, "grouping": asdict(self.grouping), "valid_exact_f1": round(f1, 4),
                  "valid_best_jaccard": round(jaccard, 4), "valid_sessions": len(sessions)}
        self.run_info.update(chosen, tuned=True)
        return chosen

    def generate_bundles(self, sessions: Sequence[Session]) -> list[BundlePrediction]:
        self._count_unseen("generate", sessions)
        return [grouped_prediction(session, self.probabilities(session), self.grouping) for session in sessions]

