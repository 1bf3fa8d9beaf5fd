"""Amazon category paths: parsing and leaf choice (predictors: :mod:`.category_predictors`).

The raw ``item_categories.csv`` writes paths like ``[[A,B,C],[A,D]]`` without quotes, and a
name may itself contain ", " (``Clothing, Shoes & Jewelry``). In the upstream files the
separators are a bare "," and the commas inside names are always followed by a space, which
is what :func:`parse_category_paths` relies on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

CategoryPath = tuple[str, ...]

_SEPARATOR = re.compile(r",(?! )")


def parse_category_paths(text: str) -> list[CategoryPath]:
    """Parse ``[[A,B],[C, D,E]]`` into ``[("A", "B"), ("C, D", "E")]``; ``[[]]`` gives ``[]``.

    Raises ``ValueError`` when the outer brackets are missing.
    """
    text = text.strip()
    if not (text.startswith("[[") and text.endswith("]]")):
        raise ValueError(f"category string must look like [[A,B],[C]], got {text[:80]!r}")
    inner = text[2:-2]
    paths = []
    for part in inner.split("],["):
        names = tuple(n.strip() for n in _SEPARATOR.split(part) if n.strip())
        if names:
            paths.append(names)
    return paths


def choose_path(paths: Sequence[CategoryPath]) -> CategoryPath | None:
    """The longest path (the first one on ties), or ``None`` when there is none."""
    if not paths:
        return None
    return max(paths, key=len)  # max keeps the first of equal keys


def format_path(path: CategoryPath) -> str:
    """Names joined with " > "."""
    return " > ".join(path)
