"""Word helpers shared by the teacher-based extractors (rule merging, intent matching)."""

from __future__ import annotations

import re

WORD_RE = re.compile(r"[a-z0-9]+")


def fold_plural(word: str) -> str:
    """A lowercase word with plurals folded: "batteries" -> "battery", "cables" -> "cable"."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word
