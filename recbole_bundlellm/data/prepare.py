"""Raw SIGIR 2022 bundle files -> RecBole atomic files plus a dataset card.

For each domain, ``prepare_domain`` writes ``out_root/<domain>/`` (benchmark ``.inter``
files for train/valid/test, ``.item``, ``.bundle``, ``dataset_card.{json,md}``,
``manifest.json``) and ``out_root/<domain>_next/<domain>_next.inter`` (a next-item view for
RecBole's own sequential models). The task set is the sessions with at least one bundle;
the ground truth is deduplicated as AICL did (see :func:`dedup_bundles`).
"""

from __future__ import annotations

import csv
import html
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recbole_bundlellm import __version__
from recbole_bundlellm.data.categories import (
    CategoryPath,
    CategoryPredictor,
    choose_path,
    format_path,
    holdout_accuracy,
    parse_category_paths,
)
from recbole_bundlellm.data.raw import (
    AICL_DIR,
    AICL_FILES,
    DOMAINS,
    USED_FILES,
    AiclSplit,
    DataError,
    SPLITS,
    RawDomain,
    check_domain,
    read_aicl_split,
    read_domain,
    read_item_asins,
)
from recbole_bundlellm.fileio import sha256_file

# Bump when the output format or any rule changes, so stored outputs are rebuilt.
PREPARE_FORMAT = "2"
CODE_VERSION = f"recbole_bundlellm {__version__} / prepare format {PREPARE_FORMAT}"

SPLIT_FRACTIONS = {"train": 0.7, "valid": 0.1, "test": 0.2}
AICL_DOMAIN = "electronic"

UPSTREAM_REPO = "BundleRec/bundle_recommendation"
UPSTREAM_COMMIT = "087da2e2b4d8738ef23f3f6f2005505e8685edde"
PAPERS = (
    "Sun et al. Revisiting Bundle Recommendation: Datasets, Tasks, Challenges and "
    "Opportunities for Intent-Aware Product Bundling. SIGIR 2022.",
    "Sun et al. Revisiting Bundle Recommendation for Intent-aware Product Bundling. "
    "ACM TORS 2024.",
)
LICENSE_NOTE = (
    "No license file upstream; built on the Amazon review data (research use only). "
    "Use for academic research, citing the papers."
)

INTER_HEADER = ("session_id:token", "item_id:token", "position:float", "bundle_ids:token_seq")
ITEM_HEADER = (
    "item_id:token",
    "title:token",
    "category:token",
    "category_path:token",
    "category_source:token",
)
BUNDLE_HEADER = ("bundle_id:token", "session_id:token", "intent:token")
NEXT_HEADER = ("session_id:token", "item_id:token", "timestamp:float")


def default_raw_root() -> Path | None:
    """``$BUNDLELLM_RAW_DATA`` as a Path when set (and non-empty), else ``None``."""
    value = os.environ.get("BUNDLELLM_RAW_DATA")
    return Path(value) if value else None


def clean_text(text: str, *, unescape: bool = False) -> str:
    """Collapse all whitespace (tabs, newlines, ``\\r``) to single spaces; optionally unescape HTML."""
    if unescape:
        text = html.unescape(text)
    return " ".join(text.split())


# --------------------------------------------------------------------------- bundles


@dataclass(frozen=True)
class Bundle:
    """One annotated bundle (raw ids); ``items`` in ``bundle_item.csv`` order."""

    bundle_id: int
    session_id: int
    items: tuple[int, ...]
    intent: str


@dataclass(frozen=True)
class DedupResult:
    kept: list[Bundle]
    identical_removed: int
    superset_removed: int


def dedup_bundles(bundles: Sequence[Bundle]) -> DedupResult:
    """AICL ground-truth deduplication of one session's bundles.

    1. Bundles with identical item sets: keep one. AICL's electronic file keeps the copy with
       the longest raw intent string (this reproduces all 19 cases); ties go to the lowest
       bundle id.
    2. Drop every bundle that is a strict superset of another remaining bundle.
    The kept bundles stay in bundle-id order, which is AICL's list order.
    """
    best: dict[frozenset[int], Bundle] = {}
    for bundle in sorted(bundles, key=lambda b: b.bundle_id):
        key = frozenset(bundle.items)
        held = best.get(key)
        if held is None or len(bundle.intent) > len(held.intent):
            best[key] = bundle
    unique = sorted(best.values(), key=lambda b: b.bundle_id)
    sets = [frozenset(b.items) for b in unique]
    kept = [b for b, s in zip(unique, sets) if not any(o < s for o in sets)]
    return DedupResult(
        kept=kept,
        identical_removed=len(bundles) - len(unique),
        superset_removed=len(unique) - len(kept),
    )


# --------------------------------------------------------------------------- splits


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
    seen: dict[int, str] = {}
    for row in aicl.sessions:
        if row.session_id in seen:
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
        seen[row.session_id] = row.split
    missing = sorted(set(sessions) - set(seen))
    if missing:
        raise DataError(f"{path}: {len(missing)} sessions with bundles missing, e.g. {missing[:5]}")
    return {name: sorted(s for s, sp in seen.items() if sp == name) for name in SPLITS}


def check_against_aicl(
    aicl: AiclSplit, kept: dict[int, list[Bundle]], asins: dict[int, str]
) -> int:
    """Check the deduplicated bundles against AICL's (intent, ASIN list) per session."""
    path = f"{AICL_DIR}/bundles_dedup.csv"
    for row in aicl.sessions:
        ours = [(b.intent, tuple(asins[i] for i in b.items)) for b in kept[row.session_id]]
        if ours != aicl.bundles.get(row.aicl_id, []):
            raise DataError(
                f"{path}: deduplicated bundles of session {row.session_id} (AICL "
                f"{row.aicl_id}) differ from AICL's"
            )
    return len(aicl.sessions)


# --------------------------------------------------------------------------- categories


def raw_category_path(raw: RawDomain, item: int) -> CategoryPath | None:
    """The chosen raw path of ``item`` (``None`` when absent or ``[[]]``)."""
    text = raw.categories.get(item)
    if text is None:
        return None
    try:
        return choose_path(parse_category_paths(text))
    except ValueError as err:
        line = raw.category_lines.get(item, "?")
        raise DataError(f"item_categories.csv: line {line}: {err}") from None


@dataclass
class CategoryAssignment:
    paths: dict[int, CategoryPath]
    source: dict[int, str]
    stats: dict


def assign_categories(
    raw: RawDomain, items: Sequence[int], titles: dict[int, str], train_bundle_items: set[int], seed: int
) -> CategoryAssignment:
    """Raw category for training-bundle items only; every other item gets a predicted one.

    The raw category file covers exactly the items that lie in some bundle, so using it for
    any other item would leak that item's bundle membership.
    """
    allowed: dict[int, CategoryPath] = {}
    for item in sorted(train_bundle_items):
        path = raw_category_path(raw, item)
        if path is not None:
            allowed[item] = path
    if not allowed:
        raise DataError(f"{raw.domain}: no training-bundle item has a category to learn from")
    fit_items = sorted(allowed)
    fit_titles = [titles[i] for i in fit_items]
    fit_paths = [allowed[i] for i in fit_items]
    predictor = CategoryPredictor().fit(fit_titles, fit_paths)
    to_predict = [i for i in items if i not in allowed]
    predicted = dict(zip(to_predict, predictor.predict([titles[i] for i in to_predict])))
    paths = {i: allowed.get(i) or predicted[i] for i in items}
    source = {i: "raw" if i in allowed else "predicted" for i in items}
    stats = {
        "items_raw_category": len(allowed),
        "items_predicted_category": len(to_predict),
        "training_bundle_items_without_raw_category": len(train_bundle_items) - len(allowed),
        "distinct_leaves": len({p[-1] for p in paths.values()}),
        "predictor": "TF-IDF (word unigrams) of titles, cosine 1-nearest neighbour, "
        "fit on training-bundle items",
        "predictor_holdout": {
            "note": "fit on a seeded 80 % of training-bundle items, scored on the other 20 %",
            **holdout_accuracy(fit_titles, fit_paths, seed=seed),
        },
    }
    return CategoryAssignment(paths=paths, source=source, stats=stats)


# --------------------------------------------------------------------------- build


@dataclass
class Built:
    """Everything to write for one domain, kept in memory until it is all valid."""

    tables: dict[str, tuple[tuple[str, ...], list[tuple]]]  # file name -> (header, rows)
    next_rows: list[tuple]
    card: dict


def _input_files(raw_root: Path, domain: str) -> list[Path]:
    folder = Path(raw_root) / domain
    files = [folder / name for name in USED_FILES]
    if domain == AICL_DOMAIN:
        files.append(folder / "item_idx_mapping.csv")
        files += [folder / AICL_DIR / name for name in AICL_FILES]
    return files


def input_hashes(raw_root: Path, domain: str) -> dict[str, str]:
    """SHA-256 of every input file, keyed by its path relative to ``raw_root``."""
    if not (Path(raw_root) / domain).is_dir():
        raise DataError(f"{Path(raw_root) / domain}: raw data folder not found")
    out = {}
    for path in _input_files(raw_root, domain):
        if not path.is_file():
            if path.parent.name == AICL_DIR:
                read_aicl_split(raw_root, domain)  # raises the explanatory error
            raise DataError(f"{path}: file not found")
        out[path.relative_to(raw_root).as_posix()] = sha256_file(path)
    return out


def _load_titles(raw: RawDomain, aicl: AiclSplit | None, asins: dict[int, str]) -> dict[int, str]:
    titles = {i: clean_text(t, unescape=True) for i, t in raw.titles.items()}
    if aicl is not None:
        # AICL's full titles also cover the items in no bundle (same raw text for the others).
        for item, asin in asins.items():
            if asin in aicl.titles:
                titles[item] = clean_text(aicl.titles[asin], unescape=True)
    return {i: t for i, t in titles.items() if t}


def _session_bundles(raw: RawDomain, session: int) -> list[Bundle]:
    return [
        Bundle(b, session, tuple(raw.bundle_items[b]), raw.intents.get(b, ""))
        for b in raw.session_bundles.get(session, [])
    ]


@dataclass
class TaskSessions:
    """The task-set sessions after dropping untitled items (raw ids, session order)."""

    sessions: dict[int, list[int]]
    raw_bundles: dict[int, list[Bundle]]  # every session with bundles, before dedup
    dropped_items: set[int]
    dropped_rows: int
    dropped_sessions: list[int]


def task_sessions(raw: RawDomain, titles: dict[int, str]) -> TaskSessions:
    """Sessions with >= 1 bundle, without untitled items; those left with < 2 items go.

    Titles cover only bundle items upstream, so an untitled item is one in no bundle, and
    keeping it would tell a model that it is not in a bundle.
    """
    task = sorted(s for s in raw.session_items if raw.session_bundles.get(s))
    raw_bundles = {s: _session_bundles(raw, s) for s in task}
    for bundles in raw_bundles.values():
        for b in bundles:
            untitled = [i for i in b.items if i not in titles]
            if untitled:
                raise DataError(
                    f"item_titles.csv: bundle item {untitled[0]} (bundle {b.bundle_id}) has no title"
                )
    out = TaskSessions({}, raw_bundles, set(), 0, [])
    for s in task:
        items = [i for i in raw.session_items[s] if i in titles]
        out.dropped_rows += len(raw.session_items[s]) - len(items)
        out.dropped_items.update(i for i in raw.session_items[s] if i not in titles)
        if len(items) >= 2:
            out.sessions[s] = items
        else:
            out.dropped_sessions.append(s)
    return out


SEEDED_SPLIT_RULE = (
    "seeded 7:1:2: numpy default_rng(seed).permutation of the sorted session ids; "
    "valid = round_half_up(0.1 n), test = round_half_up(0.2 n), train = the rest "
    "(each split >= 1 session when n >= 3)"
)
AICL_SPLIT_RULE = (
    "AICL split (hoangpanda/DICL1, converted to aicl_split/sessions.csv): "
    "bundlerec_session_id mapped to raw session ids, item sequences checked by ASIN"
)


def build_domain(
    raw_root: Path, domain: str, seed: int, inputs: dict[str, str] | None = None
) -> Built:
    """Read, validate, deduplicate, split and label one domain (nothing is written).

    ``inputs`` are the input hashes for the card (computed when not given).
    """
    raw = read_domain(raw_root, domain)
    aicl = read_aicl_split(raw_root, domain) if domain == AICL_DOMAIN else None
    asins: dict[int, str] = {}
    if aicl is not None:
        needed = {i for items in raw.session_items.values() for i in items}
        asins = {i: a for i, a in read_item_asins(raw_root, domain).items() if i in needed}
    titles = _load_titles(raw, aicl, asins)
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
    cats = assign_categories(raw, items, titles, train_bundle_items, seed)

    tables: dict[str, tuple[tuple[str, ...], list[tuple]]] = {}
    for name in SPLITS:
        tables[f"{domain}.{name}.inter"] = (INTER_HEADER, _inter_rows(splits[name], sessions, kept))
    tables[f"{domain}.item"] = (ITEM_HEADER, _item_rows(items, titles, cats))
    tables[f"{domain}.bundle"] = (
        BUNDLE_HEADER,
        [(b.bundle_id, s, clean_text(b.intent)) for s in sorted(kept) for b in kept[s]],
    )
    next_rows = [(s, i, pos) for s in sorted(sessions) for pos, i in enumerate(sessions[s])]

    counts = _counts(raw, task, dedup, splits, items)
    card = {
        "dataset": domain,
        "code_version": CODE_VERSION,
        "source": _source(domain, aicl is not None),
        "task_set": "sessions with >= 1 annotated bundle",
        "dedup_rule": (
            "per session: of bundles with identical item sets keep the one with the longest "
            "raw intent (lowest bundle id on ties); then drop every bundle that is a strict "
            "superset of another bundle of the session"
        ),
        "split": {
            "rule": AICL_SPLIT_RULE if aicl is not None else SEEDED_SPLIT_RULE,
            "seed": seed,
            "seed_used_for_split": aicl is None,
        },
        "aicl_ground_truth_checked_sessions": aicl_checked,
        "counts": counts,
        "categories": {
            "rule": (
                "raw category (longest path, first on ties; leaf = last name) only for items "
                "in deduplicated bundles of training sessions; all other items predicted from "
                "the title"
            ),
            **cats.stats,
        },
        "inputs": inputs if inputs is not None else input_hashes(raw_root, domain),
        "files": [*tables, f"../{domain}_next/{domain}_next.inter"],
    }
    return Built(tables=tables, next_rows=next_rows, card=json.loads(json.dumps(card)))


def _source(domain: str, aicl: bool) -> dict:
    return {
        "upstream": f"https://github.com/{UPSTREAM_REPO}",
        "commit": UPSTREAM_COMMIT,
        "path": f"dataset/{domain}/",
        "papers": list(PAPERS),
        "license": LICENSE_NOTE,
        "titles": (
            "aicl_split/item_titles_full.csv (all items titled)"
            if aicl
            else "item_titles.csv (covers bundle items only; untitled items dropped)"
        ),
    }


def _counts(
    raw: RawDomain,
    task: TaskSessions,
    dedup: dict[int, DedupResult],
    splits: dict[str, list[int]],
    items: list[int],
) -> dict:
    raw_all = [b for bundles in task.raw_bundles.values() for b in bundles]
    kept_all = [b for s in sorted(dedup) for b in dedup[s].kept]
    n_inter = sum(len(v) for v in task.sessions.values())
    return {
        "sessions_raw": len(raw.session_items),
        "sessions_with_bundles": len(task.raw_bundles),
        "sessions_dropped_below_2_titled_items": len(task.dropped_sessions),
        "sessions": len(task.sessions),
        "sessions_per_split": {name: len(splits[name]) for name in SPLITS},
        "items": len(items),
        "untitled_items_dropped": len(task.dropped_items),
        "untitled_item_rows_dropped": task.dropped_rows,
        "interactions": n_inter,
        "avg_session_length": round(n_inter / max(len(task.sessions), 1), 4),
        "bundles_raw": len(raw_all),
        "bundles_dedup": len(kept_all),
        "dedup_removed_identical": sum(d.identical_removed for d in dedup.values()),
        "dedup_removed_superset": sum(d.superset_removed for d in dedup.values()),
        "bundles_dedup_per_split": {
            name: sum(len(dedup[s].kept) for s in splits[name]) for name in SPLITS
        },
        "avg_bundle_size_raw": _mean_size(raw_all),
        "avg_bundle_size_dedup": _mean_size(kept_all),
        "empty_intents_dedup": sum(1 for b in kept_all if not clean_text(b.intent)),
    }


def _mean_size(bundles: Sequence[Bundle]) -> float:
    return round(sum(len(b.items) for b in bundles) / max(len(bundles), 1), 4)


def _item_rows(items: Sequence[int], titles: dict[int, str], cats: CategoryAssignment) -> list[tuple]:
    return [
        (i, titles[i], cats.paths[i][-1], format_path(cats.paths[i]), cats.source[i])
        for i in items
    ]


def _inter_rows(
    session_ids: Sequence[int], sessions: dict[int, list[int]], kept: dict[int, list[Bundle]]
) -> list[tuple]:
    rows = []
    for s in sorted(session_ids):
        for pos, item in enumerate(sessions[s]):
            ids = " ".join(str(b.bundle_id) for b in kept[s] if item in b.items)
            rows.append((s, item, pos, ids))
    return rows


# --------------------------------------------------------------------------- writing


def write_atomic_table(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Write a RecBole atomic file (tab separated, ``name:type`` header, minimal quoting)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(header)
        writer.writerows(rows)


def render_card_markdown(card: dict) -> str:
    """A short human-readable version of the card."""
    c, cat, sp = card["counts"], card["categories"], card["split"]
    hold = cat["predictor_holdout"]
    lines = [
        f"# Dataset card: {card['dataset']}",
        "",
        f"Source: {card['source']['upstream']} @ {card['source']['commit']}, "
        f"`{card['source']['path']}`. {card['source']['license']}",
        "",
        "Cite: " + " / ".join(card["source"]["papers"]),
        "",
        f"Titles: {card['source']['titles']}.",
        "",
        f"Task set: {card['task_set']}. Dedup: {card['dedup_rule']}.",
        "",
        f"Split: {sp['rule']}. Seed {sp['seed']}"
        + ("" if sp["seed_used_for_split"] else " (used only for the category hold-out)")
        + ".",
        "",
        "| | value |",
        "|---|---|",
    ]
    for key, value in c.items():
        if isinstance(value, dict):
            value = " / ".join(f"{k} {v}" for k, v in value.items())
        lines.append(f"| {key.replace('_', ' ')} | {value} |")
    lines += [
        "",
        f"Categories: {cat['rule']}. Raw: {cat['items_raw_category']} items, predicted: "
        f"{cat['items_predicted_category']} items ({cat['predictor']}). Hold-out "
        f"({hold['n_heldout']} of {hold['n_fit'] + hold['n_heldout']} training-bundle items): "
        f"leaf accuracy {hold['leaf_accuracy']}, full-path accuracy {hold['path_accuracy']}.",
        "",
        "Input files (SHA-256):",
        "",
    ]
    lines += [f"- `{name}` {digest}" for name, digest in card["inputs"].items()]
    lines += ["", f"Written by {card['code_version']}.", ""]
    return "\n".join(lines)


def _replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, replacing an older ``dst`` (restored if the move fails)."""
    old = None
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
        old.rmdir()
        os.rename(dst, old)
    try:
        os.rename(src, dst)
    except BaseException:
        if old is not None:
            os.rename(old, dst)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_outputs(built: Built, out_root: Path, domain: str, manifest: dict) -> None:
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{domain}.tmp-", dir=out_root))
    try:
        main, nxt = tmp / domain, tmp / f"{domain}_next"
        main.mkdir()
        nxt.mkdir()
        for name, (header, rows) in built.tables.items():
            write_atomic_table(main / name, header, rows)
        write_atomic_table(nxt / f"{domain}_next.inter", NEXT_HEADER, built.next_rows)
        (main / "dataset_card.json").write_text(json.dumps(built.card, indent=2) + "\n", encoding="utf-8")
        (main / "dataset_card.md").write_text(render_card_markdown(built.card), encoding="utf-8")
        # The manifest is what marks a finished output, so it is written last.
        (main / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _replace_dir(nxt, out_root / f"{domain}_next")
        _replace_dir(main, out_root / domain)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _stored_card(out_root: Path, domain: str, manifest: dict) -> dict | None:
    folder = out_root / domain
    try:
        stored = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        if stored != manifest or not (out_root / f"{domain}_next" / f"{domain}_next.inter").is_file():
            return None
        return json.loads((folder / "dataset_card.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- public API


def prepare_domain(
    raw_root: Path, out_root: Path, domain: str, *, seed: int = 2024, force: bool = False
) -> dict:
    """Prepare one domain and return its dataset card.

    Returns the stored card without recomputing when ``out_root/<domain>/manifest.json``
    records the same input hashes, seed and code version (unless ``force``). Outputs are
    built in a temporary folder and renamed into place, so an error leaves no partial output
    (and an older output untouched).
    """
    check_domain(domain)
    raw_root, out_root = Path(raw_root), Path(out_root)
    manifest = {
        "domain": domain,
        "seed": seed,
        "code_version": CODE_VERSION,
        "inputs": input_hashes(raw_root, domain),
    }
    if not force:
        card = _stored_card(out_root, domain, manifest)
        if card is not None:
            return card
    built = build_domain(raw_root, domain, seed, manifest["inputs"])
    _write_outputs(built, out_root, domain, manifest)
    return built.card


def prepare(
    raw_root: Path,
    out_root: Path,
    domains: Sequence[str] = DOMAINS,
    *,
    seed: int = 2024,
    force: bool = False,
) -> dict[str, dict]:
    """Prepare several domains; returns ``{domain: card}``."""
    for domain in domains:
        check_domain(domain)
    return {d: prepare_domain(raw_root, out_root, d, seed=seed, force=force) for d in domains}
