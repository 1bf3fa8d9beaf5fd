"""NeuralBundleTrainer through the runner, with a minimal model defined here: training lowers the
loss, the best epoch is kept, and a model without bundles to learn from is a clear error."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.extension.hookspecs import hookimpl
from recbole_bundlellm.models.base import BundlePrediction
from recbole_bundlellm.models.baselines.neural import NeuralBundleModel
from recbole_bundlellm.extension.registry import ModelSpec
from recbole_bundlellm.commands.runner import run
from recbole_bundlellm.testing import plugin_host

NEURAL_YAML = Path(__import__("recbole_bundlellm").__file__).parent / "models" / "baselines" / "NeuralBundle.yaml"


class SamePair(NeuralBundleModel):
    """Scores a pair by a learned bilinear form of title vectors and category embeddings; the
    pairs above one half are joined (connected components), the whole session when none is."""

    def build(self) -> None:
        dim = self.items.dim
        self.category = torch.nn.Embedding(self.items.n_categories, 8)
        self.project = torch.nn.Linear(dim + 8, 16)

    def _pair_logits(self, session: Session) -> torch.Tensor:
        f = self.features(session)
        h = self.project(torch.cat([f.titles, self.category(f.categories)], dim=1))
        return h @ h.T

    def session_loss(self, sessions: Sequence[Session], rng: random.Random) -> torch.Tensor:
        losses = []
        for s in sessions:
            together = torch.tensor([[float(any(a in b and c in b for b in s.bundles)) for c in s.item_ids]
                                     for a in s.item_ids])
            mask = ~torch.eye(len(s), dtype=torch.bool)
            losses.append(torch.nn.functional.binary_cross_entropy_with_logits(
                self._pair_logits(s)[mask], together[mask]))
        return torch.stack(losses).mean()

    def generate_bundles(self, sessions: Sequence[Session]) -> list[BundlePrediction]:
        out = []
        for s in sessions:
            prob = torch.sigmoid(self._pair_logits(s))
            parent = list(range(len(s)))

            def root(i: int) -> int:
                while parent[i] != i:
                    i = parent[i]
                return i
            for i, j in itertools.combinations(range(len(s)), 2):
                if prob[i, j] > 0.5:
                    parent[root(i)] = root(j)
            groups: dict[int, list[str]] = {}
            for i, item in enumerate(s.item_ids):
                groups.setdefault(root(i), []).append(item)
            bundles = [tuple(g) for g in groups.values() if len(g) > 1] or [tuple(s.item_ids)]
            out.append(BundlePrediction(s.session_id, bundles))
        return out


class SamePairPlugin:
    @hookimpl
    def register_models(self, register: Callable[[ModelSpec], None]) -> None:
        register(ModelSpec("SamePair", SamePair, (NEURAL_YAML,), "recbole_bundlellm.training.neural_trainer:NeuralBundleTrainer"))


@pytest.fixture
def host():
    with plugin_host(("same_pair", SamePairPlugin())) as h:
        yield h


def test_training_lowers_the_loss_and_keeps_the_best_epoch(tiny_data, tmp_path, host):
    result = run("SamePair", "clothing", config_dict={"data_path": str(tiny_data), "epochs": 6, "stopping_step": 10},
                 output_dir=tmp_path / "out", host=host)
    training = result.info["training"]
    losses = [e["mean_loss"] for e in training["epochs"]]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert training["trainable_parameters"] > 0 and training["best_valid_score"] is not None
    assert 0.0 <= result.test_result["exactf1"] <= 1.0


def test_the_same_seed_trains_the_same_model(tiny_data, tmp_path, host):
    runs = [run("SamePair", "clothing", config_dict={"data_path": str(tiny_data), "epochs": 2},
                output_dir=tmp_path / f"out{i}", host=host) for i in range(2)]
    assert runs[0].info["training"]["epochs"][-1]["mean_loss"] == runs[1].info["training"]["epochs"][-1]["mean_loss"]
    assert runs[0].test_result == runs[1].test_result
