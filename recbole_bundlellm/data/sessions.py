"""Sessions as the bundle models see them: ordered products with their features and bundles."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Session:
    """One shopping session of the task set.

    ``item_ids``, ``titles`` and ``categories`` are parallel tuples in session order (raw
    tokens, as written in the atomic files). ``bundles`` is the deduplicated ground truth,
    each bundle a frozenset of raw item ids; it is empty where labels are not available.
    ``intents`` is parallel to ``bundles`` (the annotated intent of each bundle) where the
    ``<dataset>.bundle`` file was read, else empty.
    """

    session_id: str
    item_ids: tuple[str, ...]
    titles: tuple[str, ...]
    categories: tuple[str, ...] = ()
    bundles: tuple[frozenset[str], ...] = field(default=())
    intents: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.item_ids)

    @functools.cached_property
    def positions(self) -> dict[str, int]:
        """Item id → its 0-based position in the session (its first one, as ``item_ids.index``)."""
        first: dict[str, int] = {}
        for i, item in enumerate(self.item_ids):
            first.setdefault(item, i)
        return first

    def in_session_order(self, items: Iterable[str]) -> list[str]:
        """``items`` (of this session) sorted by their position in it."""
        return sorted(items, key=self.positions.__getitem__)


def read_intents(path: str | Path) -> dict[str, str]:
    """``bundle_id → intent`` from a ``<dataset>.bundle`` atomic file (empty if it is absent)."""
    path = Path(path)
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        names = [h.split(":")[0] for h in header]
        if "bundle_id" not in names or "intent" not in names:
            raise ValueError(f"{path}: expected columns bundle_id and intent, got {header}")
        b, i = names.index("bundle_id"), names.index("intent")
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) > max(b, i):
                out[cols[b]] = cols[i]
    return out


def sessions_from_dataset(dataset: Any, *, with_bundles: bool = True,
                          intents: Mapping[str, str] | None = None) -> list[Session]:
    """The sessions of one split, read from a built RecBole :class:`~recbole.data.dataset.Dataset`.

    Uses the split's ``inter_feat`` (session, item, position, bundle_ids) and the shared
    ``item_feat`` (title, category). Sessions come back sorted by raw session id, so any
    subset ("the first N sessions") is the same for every model. ``intents`` (bundle id →
    intent, from :func:`read_intents`) fills :attr:`Session.intents`.
    """
    uid_field, iid_field = dataset.uid_field, dataset.iid_field
    inter = dataset.inter_feat
    missing = [f for f in (uid_field, iid_field, "position") if f not in inter]
    if with_bundles and "bundle_ids" not in inter:
        missing.append("bundle_ids")
    if dataset.item_feat is None or "title" not in dataset.item_feat:
        missing.append("title (item file)")
    if missing:
        raise KeyError(
            f"the dataset lacks {', '.join(missing)}: add them to `load_col` "
            "(the bundle defaults load inter: [session_id, item_id, position, bundle_ids], "
            "item: [item_id, title, category])"
        )
    uids = inter[uid_field].tolist()
    iids = inter[iid_field].tolist()
    positions = inter["position"].tolist()
    bundle_rows = inter["bundle_ids"].tolist() if with_bundles else [[] for _ in uids]

    item_feat = dataset.item_feat
    title_tok = dataset.field2id_token["title"]
    titles = [title_tok[t] for t in item_feat["title"].tolist()]
    has_category = "category" in item_feat
    if has_category:
        cat_tok = dataset.field2id_token["category"]
        categories = [cat_tok[c] for c in item_feat["category"].tolist()]
    sess_tok = dataset.field2id_token[uid_field]
    item_tok = dataset.field2id_token[iid_field]
    bundle_tok = dataset.field2id_token["bundle_ids"] if with_bundles else None

    rows: dict[int, list[tuple[float, int, list[int]]]] = {}
    for uid, iid, pos, bids in zip(uids, iids, positions, bundle_rows):
        rows.setdefault(uid, []).append((pos, iid, bids))

    sessions = []
    for uid, items in rows.items():
        items.sort()
        members: dict[str, set[str]] = {}
        for _, iid, bids in items:
            for b in bids:
                if b:  # 0 pads token sequences
                    members.setdefault(bundle_tok[b], set()).add(item_tok[iid])
        bundle_ids = sorted(members, key=session_id_order)
        sessions.append(
            Session(
                session_id=str(sess_tok[uid]),
                item_ids=tuple(str(item_tok[iid]) for _, iid, _ in items),
                titles=tuple(titles[iid] for _, iid, _ in items),
                categories=tuple(categories[iid] for _, iid, _ in items) if has_category else (),
                bundles=tuple(frozenset(members[b]) for b in bundle_ids),
                intents=tuple(intents.get(b, "") for b in bundle_ids) if intents else (),
            )
        )
    sessions.sort(key=lambda s: session_id_order(s.session_id))
    return sessions


def session_id_order(token: str) -> tuple[int, int | str]:
    """Sort key of raw ids: numeric ids by value first (ASCII digits only: "²".isdigit() is True
    but int("²") fails), then the others as text."""
    return (0, int(token)) if token.isascii() and token.isdigit() else (1, token)
