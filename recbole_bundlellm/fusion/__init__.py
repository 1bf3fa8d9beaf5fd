"""Fusion: how several LoRA experts of one base model are combined per input (RouteDK).

- :class:`FusionRouter` is the contract router plugins implement (registered through the
  ``register_fusion_routers`` hook): a component whose :meth:`~FusionRouter.build` gives a
  :class:`~recbole_bundlellm.fusion.router.RouterModule`, a ``torch.nn.Module`` mapping an input
  representation ``[batch, input_size]`` to expert weights ``[batch, n_experts]`` (or per LoRA
  layer ``[batch, n_layers, n_experts]``) that sum to 1 over the experts. A module may opt in to
  per-session features besides the representation (``uses_session_features``: it is then called
  ``module(representation, features)``, ``features`` a
  :class:`~recbole_bundlellm.fusion.features.SessionFeatures`); :func:`build_router` is how a
  model builds a router, old-style ``build`` signatures included.
- :mod:`.mixture` applies such weights: every LoRA layer adds the weighted sum of the experts'
  deltas, per input, in one forward pass of the model.
- :mod:`.representation` computes the default input representation (the frozen base model's
  mean-pooled prompt hidden states); :mod:`.vote` is the inference-time enhancement (a
  bundle-level vote over K answers).

This module imports no torch: the plugin host imports the contract to check registrations.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from recbole_bundlellm.settings import Component, ranged

if TYPE_CHECKING:
    from recbole_bundlellm.fusion.router import RouterModule


@dataclass(frozen=True)
class RoutingSettings:
    """Settings most routers share: how scores become weights (see :func:`.router.normalise`)."""

    temperature: float = ranged(1.0, above=0)  # (float) softmax temperature: above 1 flatter weights, below 1 sharper
    # (int) keep the k largest weights per input, renormalised (~: all experts)
    top_k: int | None = ranged(None, min=1, none_means="all experts")


class FusionRouter(Component, ABC):
    """Base class of fusion routers: ``name`` (also its YAML settings key), ``description`` and
    ``Settings`` (a dataclass with defaults).

    A router component is a factory: the model calls :meth:`build` once it knows its experts and
    the size of the input representation, and trains (or not) the module it gets. The experts
    stay frozen; only the router's parameters train.
    """

    #: True when the module has parameters to train (``False``: fixed weights, no training).
    trainable: ClassVar[bool] = True

    @abstractmethod
    def build(self, experts: Sequence[str], input_size: int, n_layers: int = 1,
              features: Sequence[str] = ()) -> RouterModule:
        """A module mapping ``[batch, input_size]`` to weights over ``experts`` (in that order):
        ``[batch, len(experts)]``, or ``[batch, n_layers, len(experts)]`` for a router that gives
        each of the mixture's ``n_layers`` LoRA layers its own weights. Weights are >= 0 and sum
        to 1 over the experts. A setting that does not fit the experts (a ``top_k`` above their
        number, a fixed weight for an unknown expert) raises
        :class:`~recbole_bundlellm.settings.SettingsError`.

        ``features``: the names of the session features the model can give each input
        (:func:`~recbole_bundlellm.fusion.features.feature_names`). A module that reads them sets
        ``uses_session_features = True`` and takes ``forward(representation, features)``; the
        others ignore them. The parameter is optional: a ``build`` without it (the contract before
        session features) is called without it (:func:`build_router`)."""

    def candidates(self, experts: Sequence[str]) -> list[list[float]] | None:
        """Static weight vectors (one weight per expert, in ``experts`` order) for the model to
        choose from on valid and merge into one adapter; ``None`` (the default): the module of
        :meth:`build` routes as it is."""
        return None


def build_router(router: FusionRouter, experts: Sequence[str], input_size: int, n_layers: int = 1,
                 features: Sequence[str] = ()) -> RouterModule:
    """``router.build(...)``, given ``features`` only where its ``build`` takes them (a parameter
    named ``features``, or ``**kwargs``): a router written before session features is built as
    it always was."""
    parameters = inspect.signature(router.build).parameters.values()
    if any(p.name == "features" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return router.build(experts, input_size, n_layers, features=tuple(features))
    return router.build(experts, input_size, n_layers)


def uses_session_features(module: object) -> bool:
    """True when a router module reads session features (its ``uses_session_features``; a module
    without the attribute does not)."""
    return bool(getattr(module, "uses_session_features", False))


__all__ = ["FusionRouter", "RoutingSettings", "build_router", "uses_session_features"]
