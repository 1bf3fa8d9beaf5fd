"""Progress bars for long steps (generation, distillation, training, grids).

A bar shows items done, rate and ETA on a terminal. When stderr is not a terminal (CI, a log file,
``nohup``, SLURM) a bar's carriage returns would garble the log, so a long step writes a plain
progress *line* instead every ``BUNDLELLM_PROGRESS_INTERVAL`` seconds (default 30: done / total,
rate, ETA) and one when it ends. ``BUNDLELLM_PROGRESS=1`` forces the bar, ``=0`` silences both; a
caller's ``enabled=False`` silences both too.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

PROGRESS_ENV = "BUNDLELLM_PROGRESS"
INTERVAL_ENV = "BUNDLELLM_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0


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


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


class ProgressLines:
    """Progress for a log: one line (done / total, rate, ETA) every ``interval`` seconds and one at
    the end, instead of a bar. Takes the part of tqdm's interface this project uses."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", interval: float = DEFAULT_INTERVAL, stream: Any = None) -> None:
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.interval, self.stream = interval, stream
        self.n, self.postfix, self.closed = 0, "", False
        self.start = self.last = time.monotonic()

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if n and now - self.last >= self.interval:
            self.last = now
            self._write(now)

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = text

    def line(self, now: float | None = None, *, done: bool = False) -> str:
        """The progress line as of ``now``."""
        elapsed = (time.monotonic() if now is None else now) - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        count = f"{self.n}/{self.total}" if self.total else str(self.n)
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        text = f"{self.desc}: {count} {self.unit}{pct}, {rate:.3g} {self.unit}/s"
        if done:
            text += f", done in {_duration(elapsed)}"
        elif self.total and rate > 0:
            text += f", elapsed {_duration(elapsed)}, ETA {_duration((self.total - self.n) / rate)}"
        return text + (f" [{self.postfix}]" if self.postfix else "")

    def _write(self, now: float | None = None, *, done: bool = False) -> None:
        stream = self.stream or sys.stderr
        try:
            stream.write(self.line(now, done=done) + "\n")
            stream.flush()
        except (OSError, ValueError):  # a closed or broken log never stops the work
            pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.n and time.monotonic() - self.start >= self.interval:
                self._write(done=True)


def progress_interval() -> float:
    """Seconds between progress lines off a terminal (``BUNDLELLM_PROGRESS_INTERVAL``, default 30)."""
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def progress_bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", enabled: bool | None = None) -> Any:
    """A tqdm bar (items done, items/s, ETA) on a terminal, progress lines in a log, or a silent
    bar when progress is off."""
    from tqdm.auto import tqdm

    forced = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if not forced and enabled is None and not _stderr_is_terminal():
        return ProgressLines(iterable, total=total, desc=desc, unit=unit, interval=progress_interval())
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not progress_enabled(enabled),
                leave=True, dynamic_ncols=True)
