"""Progress bars for long steps (generation, distillation, training, grids).

A bar shows items done, rate and ETA on a terminal; when stderr is not a terminal (CI, a log file,
``nohup``) there is no bar at all, so logs stay clean. ``BUNDLELLM_PROGRESS=1`` / ``=0`` forces it
on / off either way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

PROGRESS_ENV = "BUNDLELLM_PROGRESS"


def progress_enabled(requested: bool | None = None) -> bool:
    """Whether to draw a bar: the environment's word first, then ``requested``, else "on a terminal"."""
    forced = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if forced in {"1", "true", "yes", "on"}:
        return True
    if forced in {"0", "false", "no", "off"}:
        return False
    if requested is not None:
        return requested
    return _stderr_is_terminal()


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def progress_bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", enabled: bool | None = None) -> Any:
    """A tqdm bar (items done, items/s, ETA), or a silent one when progress is off."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not progress_enabled(enabled),
                leave=True, dynamic_ncols=True)
