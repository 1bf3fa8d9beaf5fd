"""Fusion: how several knowledge-specific experts are combined per input.

This module holds the contract that fusion router plugins implement; routers register through
the ``register_fusion_routers`` hook.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from recbole_bundlellm.settings import Component


class FusionRouter(Component, ABC):
    """Base class of fusion routers: ``name`` (also its YAML settings key), ``description`` and
    ``Settings`` (a dataclass with defaults)."""

    @abstractmethod
    def build(self, experts: Sequence[str], input_size: int) -> Any:
        """A module mapping an input representation of size ``input_size`` to one weight per
        expert in ``experts`` (e.g. a ``torch.nn.Module`` returning softmax weights)."""


__all__ = ["FusionRouter"]
