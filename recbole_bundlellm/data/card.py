"""The dataset card: source, rules, counts and category stats (JSON), and its markdown."""

from __future__ import annotations

from collections.abc import Sequence

from recbole_bundlellm.data.dedup import DEDUP_RULE, Bundle, DedupResult
from recbole_bundlellm.data.item_categories import CATEGORY_RULE
from recbole_bundlellm.data.manifest import CODE_VERSION
from recbole_bundlellm.data.raw import SPLITS, RawDomain
from recbole_bundlellm.data.splits import AICL_SPLIT_RULE, SEEDED_SPLIT_RULE
from recbole_bundlellm.data.task_set import TASK_SET_RULE, TaskSessions, clean_text

UPSTREAM_REPO = "BundleRec/bundle_recommendation"
UPSTREAM_COMMIT = "087da2e2b4d8738ef23f3f6f2005505e8685edde"
PAPERS = (
    (
        "Sun et al. Revisiting Bundle Recommendation: Datasets, Tasks, Challenges and "
        "Opportunities for Intent-Aware Product Bundling. SIGIR 2022."
    ),
    (
        "Sun et al. Revisiting Bundle Recommendation for Intent-aware Product Bundling. "
        "ACM TORS 2024."
    ),
)
LICENSE_NOTE = (
    "No license file upstream; built on the Amazon review data (research use only). "
    "Use for academic research, citing the papers."
)


def source_info(domain: str, aicl: bool) -> dict:
    """Where the data comes from, how to cite it, and which title file was used."""
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


def count_summary(
    raw: RawDomain,
    task: TaskSessions,
    dedup: dict[int, DedupResult],
    splits: dict[str, list[int]],
    items: list[int],
) -> dict:
    """Session, item, interaction and bundle counts before and after each step."""
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


def make_card(
    domain: str,
    *,
    aicl: bool,
    seed: int,
    aicl_checked_sessions: int | None,
    counts: dict,
    category_stats: dict,
    inputs: dict[str, str],
    files: list[str],
) -> dict:
    """The card's JSON content (``aicl``: the split and titles came from AICL)."""
    return {
        "dataset": domain,
        "code_version": CODE_VERSION,
        "source": source_info(domain, aicl),
        "task_set": TASK_SET_RULE,
        "dedup_rule": DEDUP_RULE,
        "split": {
            "rule": AICL_SPLIT_RULE if aicl else SEEDED_SPLIT_RULE,
            "seed": seed,
            "seed_used_for_split": not aicl,
        },
        "aicl_ground_truth_checked_sessions": aicl_checked_sessions,
        "counts": counts,
        "categories": {"rule": CATEGORY_RULE, **category_stats},
        "inputs": inputs,
        "files": files,
    }


def render_card_markdown(card: dict) -> str:
    """A short human-readable version of the card."""
    c, cat, sp = card["counts"], card["categories"], card["split"]
    hold = cat["predictor_holdout"]
    lines = [
        f"# Dataset card: {card['dataset']}",
        "",
        (
            f"Source: {card['source']['upstream']} @ {card['source']['commit']}, "
            f"`{card['source']['path']}`. {card['source']['license']}"
        ),
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
        (
            f"Categories: {cat['rule']}. Raw: {cat['items_raw_category']} items, predicted: "
            f"{cat['items_predicted_category']} items by the `{cat['category_predictor']}` "
            f"predictor ({cat['predictor']}). Hold-out "
            f"({hold['n_heldout']} of {hold['n_fit'] + hold['n_heldout']} training-bundle "
            f"items): leaf accuracy {hold['leaf_accuracy']}, full-path accuracy "
            f"{hold['path_accuracy']}."
        ),
        "",
        "Input files (SHA-256):",
        "",
    ]
    lines += [f"- `{name}` {digest}" for name, digest in card["inputs"].items()]
    lines += ["", f"Written by {card['code_version']}.", ""]
    return "\n".join(lines)
