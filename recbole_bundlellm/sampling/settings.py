"""The settings of the YAML key ``sampling:`` (which sampler, how much, which domains)."""

from __future__ import annotations

from dataclasses import dataclass

from recbole_bundlellm.sampling.sampler import MAX_RATIO, MIN_RATIO


@dataclass
class SamplingSettings:
    """The YAML key ``sampling:``."""

    sampler: str = "random"        # (str) A registered sampler: random, length, diversity, difficulty.
    ratio: float = 0.3             # (float) Share of the training sessions kept, 0.1 to 0.7.
    seed: int = 2024               # (int) Seed of the selection.
    domains: list[str] | None = None  # (list) Domains to accumulate (multi-domain); ~ for this dataset only.

    def validate(self) -> None:
        if not MIN_RATIO <= self.ratio <= MAX_RATIO:
            raise ValueError(f"ratio must be between {MIN_RATIO} and {MAX_RATIO}, got {self.ratio}")
