"""Small lookups shared by the registries: ``"module:attr"`` targets and "did you mean" hints."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from typing import Any


def import_object(target: str) -> Any:
    """The object named by ``"package.module:attr"`` (imported on first use)."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected 'module:attribute', got {target!r}")
    return getattr(importlib.import_module(module), attr)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(name), sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
