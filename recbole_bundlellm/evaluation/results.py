"""What one run produced: test (and valid) metrics, timing, where its outputs are."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunResult:
    """What one run produced; ``test_result`` maps metric names to values."""

    run_name: str
    model: str
    dataset: str
    test_result: dict[str, float]
    valid_result: dict[str, float] | None
    output_dir: Path
    data_path: Path  # the folder holding the prepared <dataset>/ folders
    timing: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
