"""BundleTrainer: fits a bundle generator and evaluates it with RecBole's Evaluator.

RecBole's Trainer scores items and ranks them; bundle generators write bundles instead. So
this trainer keeps RecBole's contract (``fit`` / ``evaluate`` on RecBole data loaders, results
from ``recbole.evaluator.Evaluator``) and changes only what happens in between.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from logging import getLogger
from typing import Any

import recbole_bundlellm  # noqa: F401  (compat patches before recbole)
from recbole.evaluator import Evaluator
from recbole.evaluator.collector import DataStruct
from recbole.trainer import AbstractTrainer

from recbole_bundlellm.data.sessions import Session, sessions_from_dataset
from recbole_bundlellm.models.base import BundleGenerator, BundlePrediction, without_labels


class BundleEvaluation:
    """Bundle evaluation on RecBole's loaders, shared by the trainers of bundle models: generate
    bundles for a split's sessions (labels hidden), score them with RecBole's ``Evaluator``."""

    config: Any
    model: BundleGenerator
    evaluator: Evaluator
    #: Whether the trainer trains the model's weights (the runner then reloads the best epoch).
    trains = False

    def _init_evaluation(self) -> None:
        self.last_predictions: list[BundlePrediction] = []
        self.last_sessions: list[Session] = []
        self.timing: dict[str, float] = {}

    def evaluation_sessions(self, eval_data: Any) -> list[Session]:
        """The sessions of an evaluation loader, in id order, cut to ``eval_max_sessions`` (~: all)."""
        return _first(self._loader_sessions(eval_data), self.config["eval_max_sessions"])

    def valid_sessions(self, valid_data: Any) -> list[Session]:
        """The valid sessions a trained model is chosen and tuned on: ``valid_max_sessions`` of them
        (~: all). Not ``eval_max_sessions``: cutting the test split for a quick score must not
        also cut what the grouping and the best epoch are chosen on (Pairwise tunes on all of valid)."""
        return _first(self._loader_sessions(valid_data), self.config["valid_max_sessions"])

    @staticmethod
    def _loader_sessions(eval_data: Any) -> list[Session]:
        """Every session an evaluation loader evaluates, in id order."""
        sessions = sessions_from_dataset(eval_data.dataset)
        # The users RecBole's full-sort loader evaluates (its uid_list, no need to iterate it).
        tokens = eval_data.dataset.field2id_token[eval_data.dataset.uid_field]
        evaluated = {str(tokens[u]) for u in eval_data.uid_list}
        return [s for s in sessions if s.session_id in evaluated]

    def evaluate_bundles(self, sessions: list[Session]) -> dict[str, float]:
        """Generate bundles for ``sessions`` and compute the configured metrics."""
        start = time.perf_counter()
        predictions = self.model.generate_bundles(without_labels(sessions))
        seconds = time.perf_counter() - start
        if len(predictions) != len(sessions):
            raise RuntimeError(f"{type(self.model).__name__} returned {len(predictions)} predictions "
                               f"for {len(sessions)} sessions")
        struct = DataStruct()
        struct.set("bundle.pred", [None if p.failed else [frozenset(b) for b in p.bundles] for p in predictions])
        struct.set("bundle.truth", [list(s.bundles) for s in sessions])
        struct.set("bundle.items", [frozenset(s.item_ids) for s in sessions])
        result = self.evaluator.evaluate(struct)
        self.last_predictions, self.last_sessions = predictions, sessions
        self.timing.update(eval_seconds=seconds, eval_sessions=len(sessions),
                           seconds_per_session=seconds / max(len(sessions), 1))
        return dict(result)


@contextlib.contextmanager
def without_recbole_ddp(config: Any) -> Iterator[None]:
    """Build a trainer without RecBole's DDP wrapper: under torchrun, RecBole's ``AbstractTrainer``
    wraps the model in ``DistributedDataParallel(device_ids=[local_rank])``, which refuses CPU
    modules and models with nothing to train. Bundle models train nothing to average, and
    SFTTrainer averages the trained gradients itself."""
    single = config["single_spec"]
    config["single_spec"] = True
    try:
        yield
    finally:
        config["single_spec"] = single


class BundleTrainer(BundleEvaluation, AbstractTrainer):
    """Trainer for :class:`~recbole_bundlellm.models.base.BundleGenerator` models that do not
    train weights (Freq, the floors, prompted LLMs, Pairwise's own fit)."""

    def __init__(self, config: Any, model: BundleGenerator) -> None:
        with without_recbole_ddp(config):
            super().__init__(config, model)
        self.logger = getLogger()
        self.evaluator = Evaluator(config)
        self._init_evaluation()

    def fit(self, train_data: Any, valid_data: Any = None, verbose: bool = True, saved: bool = True,
            show_progress: bool = False, callback_fn: Any = None) -> tuple[float | None, dict | None]:
        """Give the model the training sessions (with their bundles), let it tune on the valid
        sessions (with theirs) when there are any; optionally score valid."""
        start = time.perf_counter()
        self.model.fit_bundles(sessions_from_dataset(train_data.dataset))
        self.timing["fit_seconds"] = time.perf_counter() - start
        # Only models that override tune() pay for reading the valid sessions.
        if valid_data is not None and type(self.model).tune is not BundleGenerator.tune:
            start = time.perf_counter()
            tuned = self.model.tune(sessions_from_dataset(valid_data.dataset))
            self.timing["tune_seconds"] = time.perf_counter() - start
            if tuned is not None:
                self.logger.info("%s tuned on valid: %s", type(self.model).__name__, tuned)
        if valid_data is None or not self.config["evaluate_valid"]:
            return None, None
        result = self.evaluate(valid_data)
        return result[self.config["valid_metric"].lower()], result

    def evaluate(self, eval_data: Any, load_best_model: bool = True, model_file: str | None = None,
                 show_progress: bool = False) -> dict[str, float]:
        """Generate bundles for every session of ``eval_data`` and compute the configured metrics."""
        return self.evaluate_bundles(self.evaluation_sessions(eval_data))


def _first(sessions: list[Session], limit: int | None) -> list[Session]:
    """The first ``limit`` sessions (``None``: all; the ranges allow only ``>= 1``)."""
    return sessions if limit is None else sessions[:limit]
