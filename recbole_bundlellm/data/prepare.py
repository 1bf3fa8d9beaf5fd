"""Raw SIGIR 2022 bundle files -> RecBole atomic files plus a dataset card.

For each domain, ``prepare_domain`` writes ``out_root/<domain>/`` (benchmark ``.inter``
files for train/valid/test, ``.item``, ``.bundle``, ``dataset_card.{json,md}``,
``manifest.json``) and ``out_root/<domain>_next/<domain>_next.inter`` (a next-item view for
RecBole's own sequential models). The task set is the sessions with at least one bundle;
the ground truth is deduplicated as AICL did (see :mod:`.dedup`). This module only
orchestrates; each step lives in its own module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from recbole_bundlellm.data.atomic import (
    BUNDLE_HEADER,
    INTER_HEADER,
    ITEM_HEADER,
    bundle_rows,
    inter_rows,
    item_rows,
    next_item_rows,
)
from recbole_bundlellm.data.card import count_summary, make_card
from recbole_bundlellm.data.category_predictors import (
    DEFAULT_CATEGORY_PREDICTOR,
    check_category_predictor,
)
from recbole_bundlellm.data.dedup import dedup_bundles
from recbole_bundlellm.data.item_categories import assign_categories
from recbole_bundlellm.data.manifest import input_hashes, make_manifest, stored_card
from recbole_bundlellm.data.outputs import BuiltDomain, write_outputs
from recbole_bundlellm.data.raw import (
    AICL_DOMAIN,
    DOMAINS,
    SPLITS,
    DataError,
    check_domain,
    read_aicl_split,
    read_domain,
    read_item_asins,
)
from recbole_bundlellm.data.safety import (
    check_out_apart_from_raw,
    check_replaceable,
    output_lock,
)
from recbole_bundlellm.data.splits import aicl_split, check_against_aicl, seeded_split
from recbole_bundlellm.data.task_set import load_titles, task_sessions
from recbole_bundlellm.fileio import write_errors


def default_raw_root() -> Path | None:
    """``$BUNDLELLM_RAW_DATA`` as a Path when set (and non-empty), else ``None``."""
    value = os.environ.get("BUNDLELLM_RAW_DATA")
    return Path(value) if value else None


def build_domain(
    raw_root: Path,
    domain: str,
    seed: int,
    inputs: dict[str, str],
    *,
    category_predictor: str = DEFAULT_CATEGORY_PREDICTOR,
) -> BuiltDomain:
    """Read, validate, deduplicate, split and label one domain (nothing is written).

    ``inputs`` are the input hashes for the card (the manifest's);
    ``category_predictor`` names the title -> category predictor for non-training items.
    """
    raw = read_domain(raw_root, domain)
    aicl = read_aicl_split(raw_root, domain) if domain == AICL_DOMAIN else None
    asins: dict[int, str] = {}
    if aicl is not None:
        needed = {i for items in raw.session_items.values() for i in items}
        asins = {i: a for i, a in read_item_asins(raw_root, domain).items() if i in needed}
    titles = load_titles(raw, aicl, asins)
    task = task_sessions(raw, titles)
    sessions = task.sessions
    dedup = {s: dedup_bundles(task.raw_bundles[s]) for s in sessions}
    kept = {s: d.kept for s, d in dedup.items()}

    aicl_checked = None
    if aicl is not None:
        if task.dropped_sessions:
            raise DataError(f"{domain}: sessions {task.dropped_sessions[:5]} lost untitled items")
        splits = aicl_split(aicl, {s: raw.session_items[s] for s in sessions}, asins)
        aicl_checked = check_against_aicl(aicl, kept, asins)
    else:
        splits = seeded_split(sessions, seed)

    train_bundle_items = {i for s in splits["train"] for b in kept[s] for i in b.items}
    items = sorted({i for its in sessions.values() for i in its})
    cats = assign_categories(raw, items, titles, train_bundle_items, seed, predictor=category_predictor)

    tables = {f"{domain}.{name}.inter": (INTER_HEADER, inter_rows(splits[name], sessions, kept)) for name in SPLITS}
    tables[f"{domain}.item"] = (ITEM_HEADER, item_rows(items, titles, cats))
    tables[f"{domain}.bundle"] = (BUNDLE_HEADER, bundle_rows(kept))
    card = make_card(
        domain,
        aicl=aicl is not None,
        seed=seed,
        aicl_checked_sessions=aicl_checked,
        counts=count_summary(raw, task, dedup, splits, items),
        category_stats=cats.stats,
        inputs=inputs,
        files=[*tables, f"../{domain}_next/{domain}_next.inter"],
    )
    # The JSON round trip makes the returned card equal to the one read back from disk.
    return BuiltDomain(tables=tables, next_rows=next_item_rows(sessions), card=json.loads(json.dumps(card)))


def prepare_domain(
    raw_root: Path,
    out_root: Path,
    domain: str,
    *,
    seed: int = 2024,
    force: bool = False,
    category_predictor: str = DEFAULT_CATEGORY_PREDICTOR,
) -> dict:
    """Prepare one domain and return its dataset card.

    Returns the stored card without recomputing when ``out_root/<domain>/manifest.json``
    records the same input hashes, seed, category predictor and code version (unless
    ``force``). Outputs are built in a temporary folder and renamed into place, so an error
    leaves no partial output (and an older output untouched). ``out_root`` must be apart from
    ``raw_root``; an existing output folder is replaced only if it holds nothing but what
    prepare wrote there; and one process at a time writes a domain (see :mod:`.safety`).
    """
    check_domain(domain)
    check_category_predictor(category_predictor)
    raw_root, out_root = Path(raw_root), Path(out_root)
    check_out_apart_from_raw(raw_root, out_root)
    manifest = make_manifest(domain, seed, category_predictor, input_hashes(raw_root, domain))
    if not force:
        card = stored_card(out_root, domain, manifest)
        if card is not None:
            return card
    check_replaceable(out_root, domain)  # fail before the build, which takes seconds
    built = build_domain(raw_root, domain, seed, manifest["inputs"], category_predictor=category_predictor)
    return _write_locked(built, out_root, domain, manifest, force)


def _write_locked(built: BuiltDomain, out_root: Path, domain: str, manifest: dict, force: bool) -> dict:
    """Write ``built`` under the domain's lock; the card of what is then in place."""
    with output_lock(out_root, domain):
        # Another process may have finished the same output, or left files, while we built.
        if not force:
            card = stored_card(out_root, domain, manifest)
            if card is not None:
                return card
        check_replaceable(out_root, domain)
        # write_outputs builds in a temporary folder and swaps it in whole: a failed write keeps the old one.
        kept = "the previous output is kept" if (out_root / domain).exists() else "nothing was written"
        with write_errors(lambda why: DataError(f"cannot write {domain} under {out_root}: {why}; {kept}")):
            write_outputs(built, out_root, domain, manifest)
    return built.card


def prepare(
    raw_root: Path,
    out_root: Path,
    domains: Sequence[str] = DOMAINS,
    *,
    seed: int = 2024,
    force: bool = False,
    category_predictor: str = DEFAULT_CATEGORY_PREDICTOR,
) -> dict[str, dict]:
    """Prepare several domains; returns ``{domain: card}``.

    ``category_predictor`` is one of ``CATEGORY_PREDICTORS`` ("linear", the default, or
    "nearest"); every name is checked before anything is read or written.
    """
    for domain in domains:
        check_domain(domain)
    check_category_predictor(category_predictor)
    return {
        d: prepare_domain(raw_root, out_root, d, seed=seed, force=force, category_predictor=category_predictor)
        for d in domains
    }
