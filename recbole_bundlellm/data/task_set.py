"""The task set: sessions with at least one bundle, over titled items only."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from recbole_bundlellm.data.dedup import Bundle
from recbole_bundlellm.data.raw import AiclSplit, DataError, RawDomain

#: What the task set is, in words, for the dataset card.
TASK_SET_RULE = "sessions with >= 1 annotated bundle"


def clean_text(text: str, *, unescape: bool = False) -> str:
    """Collapse all whitespace (tabs, newlines, ``\\r``) to single spaces; optionally unescape HTML."""
    if unescape:
        text = html.unescape(text)
    return " ".join(text.split())


def load_titles(raw: RawDomain, aicl: AiclSplit | None, asins: dict[int, str]) -> dict[int, str]:
    """Cleaned, non-empty title of every item that has one (AICL's full titles where given)."""
    titles = {i: clean_text(t, unescape=True) for i, t in raw.titles.items()}
    if aicl is not None:
        # AICL's full titles also cover the items in no bundle (same raw text for the others).
        for item, asin in asins.items():
            if asin in aicl.titles:
                titles[item] = clean_text(aicl.titles[asin], unescape=True)
    return {i: t for i, t in titles.items() if t}


def session_bundles(raw: RawDomain, session: int) -> list[Bundle]:
    """The raw (not yet deduplicated) bundles of ``session``, in ``session_bundle.csv`` order."""
    return [
        Bundle(b, session, tuple(raw.bundle_items[b]), raw.intents.get(b, ""))
        for b in raw.session_bundles.get(session, [])
    ]


@dataclass
class TaskSessions:
    """The task-set sessions after dropping untitled items (raw ids, session order)."""

    sessions: dict[int, list[int]]
    raw_bundles: dict[int, list[Bundle]]  # every session with bundles, before dedup
    dropped_items: set[int] = field(default_factory=set)
    dropped_rows: int = 0
    dropped_sessions: list[int] = field(default_factory=list)


def task_sessions(raw: RawDomain, titles: dict[int, str]) -> TaskSessions:
    """Sessions with >= 1 bundle, without untitled items; those left with < 2 items go.

    Titles cover only bundle items upstream, so an untitled item is one in no bundle, and
    keeping it would tell a model that it is not in a bundle.
    """
    task = sorted(s for s in raw.session_items if raw.session_bundles.get(s))
    raw_bundles = {s: session_bundles(raw, s) for s in task}
    for bundles in raw_bundles.values():
        for b in bundles:
            untitled = [i for i in b.items if i not in titles]
            if untitled:
                raise DataError(
                    f"item_titles.csv: bundle item {untitled[0]} (bundle {b.bundle_id}) has no title"
                )
    out = TaskSessions(sessions={}, raw_bundles=raw_bundles)
    for s in task:
        items = [i for i in raw.session_items[s] if i in titles]
        out.dropped_rows += len(raw.session_items[s]) - len(items)
        out.dropped_items.update(i for i in raw.session_items[s] if i not in titles)
        if len(items) >= 2:
            out.sessions[s] = items
        else:
            out.dropped_sessions.append(s)
    return out
