"""Sessions as the bundle models see them: ordered products with their features and bundles."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Session:
    """One shopping session of the task set.

    ``item_ids``, ``titles`` and ``categories`` are parallel tuples in session order (raw
    tokens, as written in the atomic files). ``bundles`` is the deduplicated ground truth,
    each bundle a frozenset of raw item ids; it is empty where labels are not available.
    """

    session_id: str
    item_ids: tuple[str, ...]
    titles: tuple[str, ...]
    categories: tuple[str, ...] = ()
    bundles: tuple[frozenset[str], ...] = field(default=())

    def __len__(self) -> int:
        return len(self.item_ids)
