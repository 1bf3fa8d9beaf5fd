"""The settings of the YAML key ``sampling:`` (which sampler, how much, which domains)."""

from __future__ import annotations

from dataclasses import dataclass

from recbole_bundlellm.sampling.sampler import MAX_RATIO, MIN_RATIO
from recbole_bundlellm.settings import ranged


@dataclass
class SamplingSettings:
    """The YAML key ``sampling:``."""

    sampler: str = "random"        # (str) A registered sampler: random, length, diversity, difficulty.
    ratio: float = ranged(0.3, min=MIN_RATIO, max=MAX_RATIO)  # (float) Share of the training sessions kept, 0.1 to 0.7.
    seed: int = 2024               # (int) Seed of the selection.
    domains: list[str] | None = None  # (list) Domains to accumulate (multi-domain); ~ for this dataset only.
