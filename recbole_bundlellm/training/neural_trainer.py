"""NeuralBundleTrainer: RecBole's ``Trainer`` for bundle generators trained by gradient descent.

RecBole's ``fit`` runs as is (epochs, validation every ``eval_step``, early stopping on
``valid_metric`` — ``ExactF1`` by default —, best-epoch choice); this class overrides only what
differs:

- ``fit``: the model first fits its item features on the training sessions and builds its layers
  (their sizes depend on the data), then RecBole's ``fit``; the best epoch is loaded and the model
  may tune its decoding on valid.
- ``_train_epoch``: :meth:`~recbole_bundlellm.models.baselines.neural.NeuralBundleModel.session_loss` over
  seeded, shuffled batches of training *sessions* (RecBole's loader yields item interactions).
- ``_valid_epoch`` / ``evaluate``: bundle generation scored by RecBole's ``Evaluator``.
- ``_save_checkpoint``: the best epoch's tensors are kept in memory (these models are small and
  train in minutes; RecBole's own checkpoint pickles the whole model into ``saved/``).
"""

from __future__ import annotations

import random
import time
from typing import Any

import torch

import recbole_bundlellm  # noqa: F401  (compat patches before recbole)
from recbole.trainer import Trainer
from recbole.utils import calculate_valid_score

from recbole_bundlellm.data.sessions import sessions_from_dataset
from recbole_bundlellm.progress import progress_bar
from recbole_bundlellm.settings import SettingsError
from recbole_bundlellm.training.trainer import BundleEvaluation, without_recbole_ddp


class NeuralBundleTrainer(BundleEvaluation, Trainer):
    """Trains a :class:`~recbole_bundlellm.models.baselines.neural.NeuralBundleModel` and evaluates it."""

    trains = True

    def __init__(self, config: Any, model: Any) -> None:
        with without_recbole_ddp(config):
            super().__init__(config, model)
        self._init_evaluation()
        self.train_sessions: list = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.epoch_stats: list[dict[str, float]] = []

    def _build_optimizer(self, **kwargs: Any) -> torch.optim.Optimizer | None:
        kwargs.setdefault("params", [p for p in self.model.parameters() if p.requires_grad])
        if not kwargs["params"]:
            return None  # RecBole builds one in __init__, before fit has built the layers
        return super()._build_optimizer(**kwargs)

    def fit(self, train_data: Any, valid_data: Any = None, verbose: bool = True, saved: bool = True,
            show_progress: bool = False, callback_fn: Any = None) -> tuple[float | None, dict | None]:
        start = time.perf_counter()
        train = sessions_from_dataset(train_data.dataset)  # read once: features and batches both use it
        self.model.fit_bundles(train)
        self.train_sessions = self.model.training_sessions(train)
        if not self.train_sessions:
            raise SettingsError(f"{type(self.model).__name__}: no training session has a ground-truth bundle "
                                "of two or more items: nothing to train on")
        self.model.to(self.device)
        # The layers exist only now (sized by the training data): RecBole built its optimizer over none.
        self.optimizer = self._build_optimizer()
        result = super().fit(train_data, valid_data if self.eval_step > 0 else None, verbose=verbose,
                             saved=saved, show_progress=show_progress, callback_fn=callback_fn)
        self._load_best()
        self.timing["fit_seconds"] = time.perf_counter() - start
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.model.run_info["parameters"] = {"trainable": trainable,
                                             "total": sum(p.numel() for p in self.model.parameters())}
        self.model.run_info["training"] = {
            "epochs_run": len(self.epoch_stats), "train_sessions": len(self.train_sessions),
            "train_seconds": round(sum(e["seconds"] for e in self.epoch_stats), 2),
            "valid_seconds": round(self.timing.get("valid_seconds", 0.0), 2),
            "best_valid_score": None if self.best_state is None else float(self.best_valid_score),
            "trainable_parameters": trainable,
            "epochs": self.epoch_stats}
        if valid_data is not None:
            tune_start = time.perf_counter()
            tuned = self.model.tune(sessions_from_dataset(valid_data.dataset))
            if tuned is not None:
                self.timing["tune_seconds"] = time.perf_counter() - tune_start
                self.logger.info("%s tuned on valid: %s", type(self.model).__name__, tuned)
        return result

    def _train_epoch(self, train_data: Any, epoch_idx: int, loss_func: Any = None,
                     show_progress: bool = False) -> float:
        """One pass over the training sessions in seeded random batches."""
        self.model.train()
        rng = random.Random(f"{self.config['seed']}-{epoch_idx}")  # same batches for the same seed
        order = list(range(len(self.train_sessions)))
        rng.shuffle(order)
        size = self.config["train_batch_size"]
        batches = [order[i:i + size] for i in range(0, len(order), size)]
        total, start = 0.0, time.perf_counter()
        bar = progress_bar(total=len(batches), desc=f"{type(self.model).__name__} epoch {epoch_idx + 1}/{self.epochs}",
                           unit="batch", enabled=show_progress or None)
        for batch in batches:
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.model.session_loss([self.train_sessions[i] for i in batch], rng)
            self._check_nan(loss)
            loss.backward()
            if self.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), **self.clip_grad_norm)
            self.optimizer.step()
            total += loss.item()
            bar.update(1)
        bar.close()
        seconds = time.perf_counter() - start
        self.epoch_stats.append({"epoch": epoch_idx + 1, "seconds": round(seconds, 3),
                                 "mean_loss": round(total / max(len(batches), 1), 5)})
        return total

    def _valid_epoch(self, valid_data: Any, show_progress: bool = False) -> tuple[float, dict[str, float]]:
        start = time.perf_counter()
        self.model.eval()
        with torch.no_grad():
            result = self.evaluate_bundles(self.valid_sessions(valid_data))
        self.timing["valid_seconds"] = self.timing.get("valid_seconds", 0.0) + time.perf_counter() - start
        return calculate_valid_score(result, self.valid_metric), result

    def evaluate(self, eval_data: Any, load_best_model: bool = True, model_file: str | None = None,
                 show_progress: bool = False) -> dict[str, float]:
        """Generate bundles for every session of ``eval_data`` with the best epoch's weights."""
        if load_best_model:
            self._load_best()
        self.model.eval()
        with torch.no_grad():
            return self.evaluate_bundles(self.evaluation_sessions(eval_data))

    def _save_checkpoint(self, epoch: int, verbose: bool = True, **kwargs: Any) -> None:
        """Keep the best epoch's tensors (in memory: see the module docstring)."""
        self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _load_best(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
