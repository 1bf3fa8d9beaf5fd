"""What a bundle metric receives, built by hand: for unit tests of a metric plugin."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def bundle_struct(pred: Sequence[Iterable[Iterable[str]] | None], truth: Sequence[Iterable[Iterable[str]]],
                  items: Sequence[Iterable[str]] | None = None) -> Any:
    """A RecBole ``DataStruct`` as a bundle model's evaluation fills it: ``bundle.pred`` (per
    session a list of frozensets, or ``None`` for a failed session), ``bundle.truth`` (per session
    a list of frozensets) and, when given, ``bundle.items`` (per session a frozenset)."""
    from recbole.evaluator.collector import DataStruct

    struct = DataStruct()
    struct.set("bundle.pred", [None if p is None else [frozenset(b) for b in p] for p in pred])
    struct.set("bundle.truth", [[frozenset(b) for b in t] for t in truth])
    if items is not None:
        struct.set("bundle.items", [frozenset(i) for i in items])
    return struct


__all__ = ["bundle_struct"]
