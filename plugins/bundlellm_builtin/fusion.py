"""Plugin ``fusion``: the built-in fusion routers ``input_aware``, ``uniform``, ``fixed`` and ``static_merge``.

- ``input_aware`` (RouteDK): a small MLP over the input representation (with
  ``session_features``, the session's features too: products, prompt tokens, knowledge kinds
  present), softmax with a temperature, optionally top-k experts and one weight vector per LoRA
  layer; it trains;
- ``uniform``: every expert weighs the same for every input (the paper's "average" ablation);
- ``fixed``: static weights from YAML, the same for every input (one expert alone, or set weights);
- ``static_merge``: static weights chosen on valid from a grid over the simplex, then merged into
  one adapter (peft's ``add_weighted_adapter``): the paper's static-merge ablation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from recbole_bundlellm.fusion import FusionRouter, RoutingSettings
from recbole_bundlellm.fusion.router import MlpRouter, RouterModule, StaticRouter, check_top_k
from recbole_bundlellm.extension.hookspecs import hookimpl
from recbole_bundlellm.lookup import did_you_mean
from recbole_bundlellm.settings import NoSettings, SettingsError, ranged


@dataclass(frozen=True)
class InputAwareSettings(RoutingSettings):
    """Settings of the ``input_aware`` YAML key."""

    hidden_size: int = ranged(64, min=0)  # (int) width of the MLP's hidden layer (0: a linear router)
    dropout: float = ranged(0.0, min=0, below=1)  # (float) dropout after the hidden layer, while the router trains
    per_layer: bool = False  # (bool) one weight vector per LoRA layer instead of one per input
    # (bool) also read the session's features (products, prompt tokens, knowledge kinds present; counts log1p-scaled)
    session_features: bool = False


@dataclass(frozen=True)
class FixedSettings:
    """Settings of the ``fixed`` YAML key."""

    # (mapping) expert -> weight >= 0, normalised to sum 1; an expert left out weighs 0
    weights: dict = field(default_factory=dict)

    def validate(self) -> None:
        for expert, weight in self.weights.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise ValueError(f"weights.{expert} must be a number >= 0, got {weight!r}")
        if self.weights and not sum(self.weights.values()) > 0:
            raise ValueError("weights must not all be 0")


class InputAwareRouter(FusionRouter):
    """RouteDK's dynamic fusion: the weights depend on the input."""

    name: ClassVar[str] = "input_aware"
    description: ClassVar[str] = "RouteDK: an MLP over the prompt's representation sets the experts' weights per input"
    Settings: ClassVar[type] = InputAwareSettings

    def build(self, experts: Sequence[str], input_size: int, n_layers: int = 1,
              features: Sequence[str] = ()) -> RouterModule:
        s = self.settings
        check_top_k(s.top_k, experts, self.name)
        if s.session_features and not features:
            raise SettingsError(f"'{self.name}.session_features' is on but this model gives its router no session "
                                "features; set it to False")
        return MlpRouter(experts, input_size, n_layers if s.per_layer else 1, hidden_size=s.hidden_size,
                         dropout=s.dropout, temperature=s.temperature, top_k=s.top_k,
                         features=features if s.session_features else ())


class UniformRouter(FusionRouter):
    """Every expert weighs 1/n for every input."""

    name: ClassVar[str] = "uniform"
    description: ClassVar[str] = "the same weight for every expert and input (average of the experts)"
    Settings: ClassVar[type] = NoSettings
    trainable: ClassVar[bool] = False

    def build(self, experts: Sequence[str], input_size: int, n_layers: int = 1) -> RouterModule:
        return StaticRouter(experts, input_size, [1.0] * len(experts))


class FixedRouter(FusionRouter):
    """Static weights from YAML, the same for every input."""

    name: ClassVar[str] = "fixed"
    description: ClassVar[str] = "static weights per expert from YAML (one expert alone, or a static merge)"
    Settings: ClassVar[type] = FixedSettings
    trainable: ClassVar[bool] = False

    def build(self, experts: Sequence[str], input_size: int, n_layers: int = 1) -> RouterModule:
        weights = self.settings.weights
        if not weights:
            raise SettingsError(f"'{self.name}.weights' is empty; give a weight per expert "
                                f"({', '.join(experts)}), e.g. {{{experts[0]}: 1.0}}")
        for expert in weights:
            if expert not in experts:
                raise SettingsError(f"'{self.name}.weights' names '{expert}', which is not an expert"
                                    f"{did_you_mean(expert, experts)} (experts: {', '.join(experts)})")
        return StaticRouter(experts, input_size, [float(weights.get(e, 0.0)) for e in experts])


@dataclass(frozen=True)
class StaticMergeSettings:
    """Settings of the ``static_merge`` YAML key."""

    step: float = 0.5  # (float) grid step over the simplex of expert weights (0.5 with 3 experts: 6 candidates)

    def validate(self) -> None:
        if not 0 < self.step <= 1 or abs(round(1 / self.step) - 1 / self.step) > 1e-9:
            raise ValueError(f"step must be 1/n for a whole n >= 1 (1, 0.5, 0.25, ...), got {self.step}")


def simplex_grid(n_experts: int, step: float) -> list[list[float]]:
    """Every weight vector of ``n_experts`` non-negative multiples of ``step`` summing to 1."""
    parts = round(1 / step)

    def split(total: int, slots: int) -> list[list[int]]:
        if slots == 1:
            return [[total]]
        return [[first, *rest] for first in range(total, -1, -1) for rest in split(total - first, slots - 1)]

    return [[p / parts for p in combo] for combo in split(parts, n_experts)]


class StaticMergeRouter(FusionRouter):
    """Static weights chosen on valid, then the experts merged into one adapter."""

    name: ClassVar[str] = "static_merge"
    description: ClassVar[str] = "static weights chosen on valid from a simplex grid, merged into one adapter"
    Settings: ClassVar[type] = StaticMergeSettings
    trainable: ClassVar[bool] = False

    def build(self, experts: Sequence[str], input_size: int, n_layers: int = 1) -> RouterModule:
        return StaticRouter(experts, input_size, [1.0] * len(experts))  # until valid chooses

    def candidates(self, experts: Sequence[str]) -> list[list[float]] | None:
        return simplex_grid(len(experts), self.settings.step)


@hookimpl
def register_fusion_routers(register: Callable[[type[FusionRouter]], None]) -> None:
    register(InputAwareRouter)
    register(UniformRouter)
    register(FixedRouter)
    register(StaticMergeRouter)
