"""The base class of bundle generators as RecBole models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import recbole_bundlellm  # noqa: F401  (compat patches before recbole)
from recbole.model.abstract_recommender import AbstractRecommender
from recbole.utils import InputType, ModelType

from recbole_bundlellm.data.sessions import Session


@dataclass
class BundlePrediction:
    """What a bundle generator answered for one session.

    ``bundles`` holds raw item ids (``None`` when the output could not be used at all);
    ``raw_text`` is the model's own text, kept for the predictions file.
    """

    session_id: str
    bundles: list[tuple[str, ...]] | None
    raw_text: str | None = None
    failure: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.bundles is None


class BundleGenerator(AbstractRecommender):
    """A RecBole model that turns sessions into bundles instead of scoring items.

    RecBole builds it as ``Cls(config, train_dataset)``; :class:`~recbole_bundlellm.training.trainer.BundleTrainer`
    then calls :meth:`fit_bundles` with the training sessions (labels visible), :meth:`tune` with
    the valid sessions (labels visible) and :meth:`generate_bundles` on each evaluation split
    (labels hidden from the model).
    """

    type = ModelType.GENERAL
    input_type = InputType.POINTWISE
    #: The run's output folder, set by the runner before fitting (``None`` outside a run): what
    #: must outlive a killed run (a served student's answers) is kept beside it.
    run_folder: Path | None = None

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__()
        self.config = config
        #: What the run records about this model as ``info`` in metrics.json (the LLM and its
        #: generation statistics, what was tuned on valid, ...).
        self.run_info: dict[str, Any] = {}

    def fit_bundles(self, train_sessions: Sequence[Session]) -> None:
        """Learn from the training sessions and their ground-truth bundles (default: nothing)."""

    def tune(self, valid_sessions: Sequence[Session]) -> dict[str, Any] | None:
        """Choose settings on the validation sessions, labels included; never sees test.

        Called after :meth:`fit_bundles` when a valid split exists; returns what it chose (for
        the run log), or ``None`` when the model has nothing to tune (the default).
        """
        return None

    def generate_bundles(self, sessions: Sequence[Session]) -> list[BundlePrediction]:
        """Predict the bundles of each session, in order."""
        raise NotImplementedError

    # RecBole's item-scoring interface does not apply to bundle generators; say so clearly.
    def calculate_loss(self, interaction: Any) -> Any:
        raise NotImplementedError(
            f"{type(self).__name__} is fit by BundleTrainer.fit_bundles, not by RecBole's loss loop"
        )

    def predict(self, interaction: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} generates bundles; it does not score items")

    def full_sort_predict(self, interaction: Any) -> Any:
        return self.predict(interaction)


def without_labels(sessions: Sequence[Session]) -> list[Session]:
    """Copies of the sessions with the ground truth removed (what a model may see at test time)."""
    return [Session(s.session_id, s.item_ids, s.titles, s.categories, ()) for s in sessions]
