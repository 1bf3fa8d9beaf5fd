"""An easy bundle dataset, generated: a few obvious category patterns, repeated.

Every session holds one or two bundles, each an instance of one of a handful of category
patterns (phone + phone case, camera + memory card + camera bag, ...), plus one to three
products of unrelated categories, in a shuffled order. Titles are ``"<Brand> <category>"``. A
model that learns which categories go together scores high; one that labels products by their
position or answers the whole session does not. It is the smallest test of whether a student
*learns* the bundle structure (the real domains add noise, long titles and rare patterns).

The files are the upstream raw layout (the 11 CSVs of a domain), written under a domain name the
data pipeline knows, so ``prepare_domain`` reads, splits (7:1:2, seeded) and labels them exactly
as the real data; ``prepare_easy_data`` does both steps.
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

#: The domain name the generated files are written under (a seeded 7:1:2 split domain).
EASY_DOMAIN = "food"
#: Bundle patterns: categories bought together, each a leaf under ``ROOT``.
PATTERNS: tuple[tuple[str, ...], ...] = (
    ("Phone", "Phone Case"),
    ("Laptop", "Laptop Sleeve", "Wireless Mouse"),
    ("Camera", "Memory Card", "Camera Bag"),
    ("Printer", "Ink Cartridge"),
    ("Television", "HDMI Cable", "Wall Mount"),
    ("Game Console", "Game Controller"),
)
#: Categories that never take part in a bundle.
DISTRACTORS: tuple[str, ...] = ("Desk Lamp", "Coffee Mug", "Notebook", "Umbrella", "Water Bottle", "Backpack",
                                "Alarm Clock", "Yoga Mat", "Sunglasses", "Wall Clock")
BRANDS: tuple[str, ...] = ("Acme", "Zenith", "Orion", "Nova", "Vertex", "Pulse", "Apex", "Lumen")
ROOT = "Electronics"


def write_easy_raw(root: str | os.PathLike, sessions: int = 300, seed: int = 0) -> Path:
    """Write the generated raw domain to ``root/<EASY_DOMAIN>/`` and return ``root``.

    ``sessions`` sessions of 1-2 pattern bundles (2-3 products each) and 1-3 distractors, in a
    random order; item ids are one per (brand, category), so products recur across sessions as
    real catalogue items do. Only bundled items get a raw category, as upstream.
    """
    rng = random.Random(f"bundlellm-easy:{seed}")
    categories = [c for pattern in PATTERNS for c in pattern] + list(DISTRACTORS)
    item_of = {(b, c): 1000 + i for i, (b, c) in enumerate((b, c) for c in categories for b in BRANDS)}
    rows: dict[str, list[list]] = {name: [] for name in (
        "session_item", "session_bundle", "bundle_item", "bundle_intent", "user_session", "user_bundle",
        "user_item")}
    bundled: set[int] = set()
    bundle_id = 0
    for session in range(sessions):
        chosen = rng.sample(PATTERNS, rng.choice((1, 1, 2)))
        items: list[int] = []
        bundles: list[list[int]] = []
        for pattern in chosen:
            bundle = [item_of[(rng.choice(BRANDS), c)] for c in pattern]
            bundles.append(bundle)
            items += bundle
        for category in rng.sample(DISTRACTORS, rng.randint(1, 3)):
            items.append(item_of[(rng.choice(BRANDS), category)])
        rng.shuffle(items)
        stamp = 1388534400 + 86400 * session
        rows["user_session"].append([session, session, stamp])
        rows["session_item"] += [[session, i] for i in items]
        rows["user_item"] += [[session, i, stamp] for i in items]
        for pattern, bundle in zip(chosen, bundles):
            rows["session_bundle"].append([session, bundle_id])
            rows["bundle_item"] += [[bundle_id, i] for i in bundle]
            rows["bundle_intent"].append([bundle_id, " and ".join(pattern).lower()])
            rows["user_bundle"].append([session, bundle_id, stamp])
            bundled.update(bundle)
            bundle_id += 1
    out = Path(root) / EASY_DOMAIN
    out.mkdir(parents=True, exist_ok=True)
    headers = {
        "session_item": ("session ID", "item ID"), "session_bundle": ("session ID", "bundle ID"),
        "bundle_item": ("bundle ID", "item ID"), "bundle_intent": ("bundle ID", "intent"),
        "user_session": ("user ID", "session ID", "timestamp"), "user_bundle": ("user ID", "bundle ID", "timestamp"),
        "user_item": ("user ID", "item ID", "timestamp"),
    }
    used = sorted({i for _, i in rows["session_item"]})
    category_of = {item: c for (_, c), item in item_of.items()}
    brand_of = {item: b for (b, _), item in item_of.items()}
    tables = {name: (headers[name], rows[name]) for name in rows}
    tables["item_titles"] = (("item ID", "titles"), [[i, f"{brand_of[i]} {category_of[i]}"] for i in used])
    tables["item_categories"] = (("item ID", "categories"),
                                 [[i, f"[[{ROOT},{category_of[i]}]]"] for i in used if i in bundled])
    tables["item_idx_mapping"] = (("item ID", "source ID"), [[i, f"B0EASY{i:05d}"] for i in used])
    tables["user_idx_mapping"] = (("user ID", "source ID"), [[s, f"AEASYUSER{s:04d}"] for s in range(sessions)])
    for name, (header, body) in tables.items():
        with open(out / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(body)
    return Path(root)


def prepare_easy_data(out: str | os.PathLike, sessions: int = 300, seed: int = 0) -> Path:
    """Generate the easy raw domain beside ``out`` and prepare it into ``out`` (RecBole atomic
    files in ``out/<EASY_DOMAIN>/``); return ``out``, the ``data_path`` of a config."""
    from recbole_bundlellm.data import prepare_domain

    out = Path(out)
    raw = write_easy_raw(out.with_name(out.name + "_raw"), sessions, seed)
    prepare_domain(raw, out, EASY_DOMAIN, seed=seed)
    return out


__all__ = ["BRANDS", "DISTRACTORS", "EASY_DOMAIN", "PATTERNS", "prepare_easy_data", "write_easy_raw"]
