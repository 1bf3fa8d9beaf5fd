"""Session splits: AICL's fixed Electronic split (checked by ASIN) and the seeded 7:1:2 one."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from recbole_bundlellm.data.dedup import Bundle
from recbole_bundlellm.data.raw import AICL_DIR, SPLITS, AiclSplit, DataError

SPLIT_FRACTIONS = {"train": 0.7, "valid": 0.1, "test": 0.2}

#: The rules of :func:`seeded_split` and :func:`aicl_split`, in words, for the dataset card.
SEEDED_SPLIT_RULE = (
    "seeded 7:1:2: numpy default_rng(seed).permutation of the sorted session ids; "
    "valid = round_half_up(0.1 n), test = round_half_up(0.2 n), train = the rest "
    "(each split >= 1 session when n >= 3)"
)
AICL_SPLIT_RULE = (
    "AICL split (hoangpanda/DICL1, converted to aicl_split/sessions.csv): "
    "bundlerec_session_id mapped to raw session ids, item sequences checked by ASIN"
)


def split_sizes(n: int) -> dict[str, int]:
    """7:1:2 sizes: valid and test are rounded half up, train takes the rest.

    With at least 3 sessions every split gets at least one (taken from train).
    """
    valid = int(np.floor(n * SPLIT_FRACTIONS["valid"] + 0.5))
    test = int(np.floor(n * SPLIT_FRACTIONS["test"] + 0.5))
    if n >= 3:
        valid, test = max(valid, 1), max(test, 1)
    return {"train": n - valid - test, "valid": valid, "test": test}


def seeded_split(session_ids: Iterable[int], seed: int) -> dict[str, list[int]]:
    """``default_rng(seed).permutation`` of the sorted ids, cut 7:1:2 (see :func:`split_sizes`)."""
    ids = np.array(sorted(session_ids), dtype=np.int64)
    order = np.random.default_rng(seed).permutation(ids)
    sizes = split_sizes(len(ids))
    cut1, cut2 = sizes["train"], sizes["train"] + sizes["valid"]
    parts = {"train": order[:cut1], "valid": order[cut1:cut2], "test": order[cut2:]}
    return {name: sorted(int(s) for s in part) for name, part in parts.items()}


def aicl_split(
    aicl: AiclSplit, sessions: dict[int, list[int]], asins: dict[int, str]
) -> dict[str, list[int]]:
    """The AICL electronic split in raw session ids, after checking item sequences by ASIN."""
    path = f"{AICL_DIR}/sessions.csv"
    split_of: dict[int, str] = {}
    for row in aicl.sessions:
        if row.session_id in split_of:
            raise DataError(f"{path}: session {row.session_id} listed twice")
        items = sessions.get(row.session_id)
        if items is None:
            raise DataError(f"{path}: session {row.session_id} is not a session with bundles")
        raw_asins = tuple(asins.get(i, "") for i in items)
        if raw_asins != row.asins:
            raise DataError(
                f"{path}: the items of AICL session {row.aicl_id} do not match raw session "
                f"{row.session_id} (compared by ASIN via item_idx_mapping.csv)"
            )
        split_of[row.session_id] = row.split
    missing = sorted(set(sessions) - set(split_of))
    if missing:
        raise DataError(f"{path}: {len(missing)} sessions with bundles missing, e.g. {missing[:5]}")
    return {name: sorted(s for s, sp in split_of.items() if sp == name) for name in SPLITS}


def check_against_aicl(
    aicl: AiclSplit, kept: dict[int, list[Bundle]], asins: dict[int, str]
) -> int:
    """Check the deduplicated bundles against AICL's (intent, ASIN list) per session.

    Returns the number of sessions checked.
    """
    path = f"{AICL_DIR}/bundles_dedup.csv"
    for row in aicl.sessions:
        ours = [(b.intent, tuple(asins[i] for i in b.items)) for b in kept[row.session_id]]
        if ours != aicl.bundles.get(row.aicl_id, []):
            raise DataError(
                f"{path}: deduplicated bundles of session {row.session_id} (AICL "
                f"{row.aicl_id}) differ from AICL's"
            )
    return len(aicl.sessions)
