"""RecBole atomic files: their headers, their rows, and a writer (tab separated, minimal quoting)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from recbole_bundlellm.data.categories import format_path
from recbole_bundlellm.data.dedup import Bundle
from recbole_bundlellm.data.item_categories import CategoryAssignment
from recbole_bundlellm.data.task_set import clean_text

Header = tuple[str, ...]

INTER_HEADER: Header = ("session_id:token", "item_id:token", "position:float", "bundle_ids:token_seq")
ITEM_HEADER: Header = (
    "item_id:token",
    "title:token",
    "category:token",
    "category_path:token",
    "category_source:token",
)
BUNDLE_HEADER: Header = ("bundle_id:token", "session_id:token", "intent:token")
NEXT_HEADER: Header = ("session_id:token", "item_id:token", "timestamp:float")


def write_atomic_table(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Write a RecBole atomic file (tab separated, ``name:type`` header, minimal quoting)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(header)
        writer.writerows(rows)


def inter_rows(
    session_ids: Sequence[int], sessions: dict[int, list[int]], kept: dict[int, list[Bundle]]
) -> list[tuple]:
    """``.inter`` rows: each item of each session with the ids of its kept bundles."""
    rows = []
    for s in sorted(session_ids):
        for pos, item in enumerate(sessions[s]):
            ids = " ".join(str(b.bundle_id) for b in kept[s] if item in b.items)
            rows.append((s, item, pos, ids))
    return rows


def item_rows(items: Sequence[int], titles: dict[int, str], cats: CategoryAssignment) -> list[tuple]:
    """``.item`` rows: title, leaf, full path and where the category came from."""
    return [
        (i, titles[i], cats.paths[i][-1], format_path(cats.paths[i]), cats.source[i])
        for i in items
    ]


def bundle_rows(kept: dict[int, list[Bundle]]) -> list[tuple]:
    """``.bundle`` rows: kept bundles by session, with their cleaned intent."""
    return [(b.bundle_id, s, clean_text(b.intent)) for s in sorted(kept) for b in kept[s]]


def next_item_rows(sessions: dict[int, list[int]]) -> list[tuple]:
    """``<domain>_next.inter`` rows: the position in the session stands in for a timestamp."""
    return [(s, i, pos) for s in sorted(sessions) for pos, i in enumerate(sessions[s])]
