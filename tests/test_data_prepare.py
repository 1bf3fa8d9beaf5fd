"""Data preparation: raw bundle files -> RecBole atomic files (real data and a tiny fixture)."""

from __future__ import annotations

import csv
import importlib
import json
import shutil
import time
from pathlib import Path

import pytest

import recbole_bundlellm  # noqa: F401  (numpy-2 patches before recbole)
from recbole_bundlellm.data import DOMAINS, DataError, default_raw_root, prepare, prepare_domain
from recbole_bundlellm.data.categories import choose_path, parse_category_paths
from recbole_bundlellm.data.category_predictors import NearestTitlePredictor, holdout_accuracy
from recbole_bundlellm.data.dedup import Bundle, dedup_bundles
from recbole_bundlellm.data.splits import seeded_split, split_sizes

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY = FIXTURES / "tiny_raw"
# The package re-exports the function ``prepare``, which shadows the submodule's attribute name.
prepare_module = importlib.import_module("recbole_bundlellm.data.prepare")
outputs_module = importlib.import_module("recbole_bundlellm.data.outputs")
SPLITS = ("train", "valid", "test")

EXPECTED = {
    # sessions per split, raw bundles, dedup bundles, removed identical / superset, items
    "electronic": ({"train": 623, "valid": 90, "test": 180}, 1750, 1346, 19, 385, 4239),
    "clothing": ({"train": 677, "valid": 97, "test": 194}, 1910, 1488, 61, 361, 4487),
    "food": ({"train": 640, "valid": 91, "test": 183}, 1784, 1352, 21, 411, 3767),
}


# --------------------------------------------------------------------------- helpers


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Read an atomic file the way RecBole splits it (tab separated, quoted fields)."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader)
        names = [h.split(":")[0] for h in header]
        return header, [dict(zip(names, row)) for row in reader]


def session_rows(folder: Path, domain: str, split: str) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for row in read_table(folder / f"{domain}.{split}.inter")[1]:
        out.setdefault(row["session_id"], []).append(row)
    return out


def bundles_by_session(folder: Path, domain: str) -> dict[str, dict[str, set[str]]]:
    """session -> bundle id -> item set, rebuilt from the .inter files' bundle_ids."""
    out: dict[str, dict[str, set[str]]] = {}
    for split in SPLITS:
        for sid, rows in session_rows(folder, domain, split).items():
            bundles = out.setdefault(sid, {})
            for row in rows:
                for b in row["bundle_ids"].split():
                    bundles.setdefault(b, set()).add(row["item_id"])
    return out


def copy_tiny(tmp_path: Path) -> Path:
    root = tmp_path / "raw"
    shutil.copytree(TINY, root)
    return root


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def prepared(raw_data_root, tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    out = tmp_path_factory.mktemp("prepared")
    return out, prepare(raw_data_root, out)


@pytest.mark.parametrize("domain", DOMAINS)
def test_real_counts(prepared, domain):
    out, cards = prepared
    per_split, n_raw, n_dedup, n_ident, n_super, n_items = EXPECTED[domain]
    counts = cards[domain]["counts"]
    assert counts["sessions_per_split"] == per_split
    assert counts["sessions"] == sum(per_split.values())
    assert counts["bundles_raw"] == n_raw
    assert counts["bundles_dedup"] == n_dedup
    assert (counts["dedup_removed_identical"], counts["dedup_removed_superset"]) == (n_ident, n_super)
    assert counts["items"] == n_items
    folder = out / domain
    for split in SPLITS:
        assert len(session_rows(folder, domain, split)) == per_split[split]
    assert len(read_table(folder / f"{domain}.bundle")[1]) == n_dedup
    assert len(read_table(folder / f"{domain}.item")[1]) == n_items
    if domain != "electronic":
        # Untitled items are dropped (clothing 1194, food 625 per SOURCE.md).
        assert counts["untitled_items_dropped"] == {"clothing": 1194, "food": 625}[domain]
    card_json = json.loads((folder / "dataset_card.json").read_text())
    assert card_json == cards[domain]
    assert (folder / "dataset_card.md").read_text().startswith(f"# Dataset card: {domain}")


@pytest.mark.parametrize("domain", DOMAINS)
def test_file_formats(prepared, domain):
    out, _ = prepared
    folder = out / domain
    bundle_header, bundle_rows = read_table(folder / f"{domain}.bundle")
    assert bundle_header == ["bundle_id:token", "session_id:token", "intent:token"]
    bundle_session = {r["bundle_id"]: r["session_id"] for r in bundle_rows}
    all_sessions = []
    for split in SPLITS:
        header, rows = read_table(folder / f"{domain}.{split}.inter")
        assert header == ["session_id:token", "item_id:token", "position:float", "bundle_ids:token_seq"]
        sessions = session_rows(folder, domain, split)
        ids = [int(s) for s in sessions]
        assert ids == sorted(ids)
        all_sessions += ids
        for sid, srows in sessions.items():
            assert [r["position"] for r in srows] == [str(i) for i in range(len(srows))]
            assert len(srows) >= 2
            assert any(r["bundle_ids"] for r in srows)
            for r in srows:
                assert all(bundle_session[b] == sid for b in r["bundle_ids"].split())
    next_header, next_rows = read_table(out / f"{domain}_next" / f"{domain}_next.inter")
    assert next_header == ["session_id:token", "item_id:token", "timestamp:float"]
    assert len({r["session_id"] for r in next_rows}) == len(all_sessions)
    assert sum(1 for _ in next_rows) == prepared[1][domain]["counts"]["interactions"]
    item_header, items = read_table(folder / f"{domain}.item")
    assert item_header == [
        "item_id:token", "title:token", "category:token", "category_path:token", "category_source:token"
    ]
    for row in items:
        assert row["title"] and "\t" not in row["title"] and "\n" not in row["title"]
        assert row["category_path"].split(" > ")[-1] == row["category"]


def test_electronic_dedup_matches_aicl(prepared, raw_data_root):
    out, _ = prepared
    aicl = raw_data_root / "electronic" / "aicl_split"
    with open(raw_data_root / "electronic" / "item_idx_mapping.csv", newline="") as f:
        asin = {r["item ID"]: r["source ID"] for r in csv.DictReader(f)}
    with open(aicl / "sessions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    to_raw = {r["aicl_session_id"]: r["bundlerec_session_id"] for r in rows}
    expected: dict[str, set[frozenset[str]]] = {}
    with open(aicl / "bundles_dedup.csv", newline="") as f:
        for r in csv.DictReader(f):
            expected.setdefault(to_raw[r["aicl_session_id"]], set()).add(frozenset(r["item_asins"].split(",")))
    ours = {
        sid: {frozenset(asin[i] for i in items) for items in bundles.values()}
        for sid, bundles in bundles_by_session(out / "electronic", "electronic").items()
    }
    assert len(ours) == 893
    assert ours == expected
    # Splits are AICL's.
    folder = out / "electronic"
    for split in SPLITS:
        want = {r["bundlerec_session_id"] for r in rows if r["split"] == split}
        assert set(session_rows(folder, "electronic", split)) == want


def test_electronic_kept_duplicate_intents(prepared):
    # Session 289 has two bundles with the same items; AICL kept the longer intent (bundle 541).
    out, _ = prepared
    rows = {r["bundle_id"]: r for r in read_table(out / "electronic" / "electronic.bundle")[1]}
    assert "540" not in rows and rows["541"]["intent"].startswith("All of these items are car related")
    assert "892" not in rows and "894" in rows  # session 463: the later, longer intent


@pytest.mark.parametrize("domain", DOMAINS)
def test_no_category_leak(prepared, domain):
    """Only items in bundles of training sessions may carry their raw category."""
    out, cards = prepared
    folder = out / domain
    train_bundle_items = {
        r["item_id"]
        for rows in session_rows(folder, domain, "train").values()
        for r in rows
        if r["bundle_ids"]
    }
    items = read_table(folder / f"{domain}.item")[1]
    raw_items = {r["item_id"] for r in items if r["category_source"] == "raw"}
    assert {r["category_source"] for r in items} <= {"raw", "predicted"}
    assert raw_items <= train_bundle_items
    for row in items:
        if row["item_id"] not in train_bundle_items:
            assert row["category_source"] == "predicted", row
    stats = cards[domain]["categories"]
    assert stats["items_raw_category"] == len(raw_items)
    assert stats["items_predicted_category"] == len(items) - len(raw_items)
    hold = stats["predictor_holdout"]
    assert stats["category_predictor"] == "linear"  # the default
    # The linear predictor's leaf accuracy was 0.63 / 0.59 / 0.54 (E / C / F) when written;
    # the nearest neighbour's 0.51 / 0.41 / 0.42.
    assert hold["n_heldout"] > 100 and 0.5 < hold["leaf_accuracy"] <= 1.0


def test_recbole_loads_electronic(prepared):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation

    out, cards = prepared
    config = Config(
        model="Pop",
        dataset="electronic",
        config_dict={
            "data_path": str(out),
            "benchmark_filename": list(SPLITS),
            "USER_ID_FIELD": "session_id",
            "ITEM_ID_FIELD": "item_id",
            "TIME_FIELD": None,
            "load_col": {
                "inter": ["session_id", "item_id", "position", "bundle_ids"],
                "item": ["item_id", "title", "category"],
            },
            "eval_args": {"order": "RO", "mode": "full", "group_by": "user"},
            "use_gpu": False,
            "show_progress": False,
            "save_dataset": False,
            "save_dataloaders": False,
            "state": "ERROR",
        },
    )
    dataset = create_dataset(config)
    counts = cards["electronic"]["counts"]
    assert dataset.inter_num == counts["interactions"]
    assert dataset.user_num == counts["sessions"] + 1  # + padding
    assert dataset.item_num == counts["items"] + 1
    train, valid, test = data_preparation(config, dataset)
    sizes = [len(d.dataset) for d in (train, valid, test)]
    folder = out / "electronic"
    assert sizes == [len(read_table(folder / f"electronic.{s}.inter")[1]) for s in SPLITS]
    # Titles with quotes survive RecBole's pandas reader.
    titles = set(dataset.field2id_token["title"])
    ours = {r["title"] for r in read_table(folder / "electronic.item")[1]}
    assert any('"' in t for t in ours)
    assert ours <= titles


# --------------------------------------------------------------------------- tiny fixture


def test_tiny_fixture_by_hand(tmp_path):
    out = tmp_path / "out"
    card = prepare_domain(TINY, out, "clothing", seed=0)
    counts = card["counts"]
    assert counts["sessions_with_bundles"] == 12 and counts["sessions"] == 12
    assert counts["sessions_per_split"] == {"train": 9, "valid": 1, "test": 2}
    assert counts["bundles_raw"] == 18 and counts["bundles_dedup"] == 16
    assert counts["dedup_removed_identical"] == 1 and counts["dedup_removed_superset"] == 1
    assert counts["untitled_items_dropped"] == 1
    folder = out / "clothing"
    bundles = {r["bundle_id"]: r for r in read_table(folder / "clothing.bundle")[1]}
    assert "2" not in bundles  # {102, 112, 151} is a strict superset of bundle 1
    assert "3" not in bundles and bundles["4"]["intent"] == "Shirt and matching tie"
    assert bundles["16"]["intent"] == "shirt and tie"  # trailing space collapsed
    items = {r["item_id"]: r for r in read_table(folder / "clothing.item")[1]}
    assert "199" not in items and len(items) == 22
    assert items["114"]["title"] == 'Paisley Silk Necktie & Pocket Square Set, 3" Wide'
    assert items["111"]["category_path"] == (
        "Clothing, Shoes & Jewelry > Men > Accessories > Ties, Cummerbunds & Pocket Squares > Ties"
    )
    for split in SPLITS:
        assert session_rows(folder, "clothing", split)
    s2 = session_rows(folder, "clothing", "train")["2"]
    assert [(r["item_id"], r["bundle_ids"]) for r in s2] == [("103", "4"), ("113", "4"), ("161", "")]
    # Several training bundles pair a shirt with a tie (for the frequent-pattern baselines).
    cats = {i: r["category"] for i, r in items.items()}
    pairs = [
        sorted(cats[i] for i in b)
        for sid, bs in bundles_by_session(folder, "clothing").items()
        if sid in session_rows(folder, "clothing", "train")
        for b in bs.values()
    ]
    assert pairs.count(["Shirts", "Ties"]) >= 4
    # A test session that is exactly one bundle, so "whole session" floors can score a hit.
    test_sessions = session_rows(folder, "clothing", "test")
    gt = bundles_by_session(folder, "clothing")
    assert any(
        {r["item_id"] for r in rows} in gt[sid].values() for sid, rows in test_sessions.items()
    )


def test_idempotent_and_force(tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = prepare_domain(TINY, out, "clothing", seed=0)
    stamp = (out / "clothing" / "clothing.item").stat().st_mtime_ns

    def boom(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(prepare_module, "build_domain", boom)
    start = time.perf_counter()
    assert prepare_domain(TINY, out, "clothing", seed=0) == first
    assert time.perf_counter() - start < 0.5
    assert (out / "clothing" / "clothing.item").stat().st_mtime_ns == stamp
    with pytest.raises(AssertionError, match="recomputed"):
        prepare_domain(TINY, out, "clothing", seed=0, force=True)
    with pytest.raises(AssertionError, match="recomputed"):
        prepare_domain(TINY, out, "clothing", seed=1)  # another seed is another output
    monkeypatch.undo()
    again = prepare_domain(TINY, out, "clothing", seed=0, force=True)
    assert again == first
    assert sorted(p.name for p in out.iterdir()) == ["clothing", "clothing_next"]


def test_category_predictor_is_part_of_the_output(tmp_path, monkeypatch):
    out = tmp_path / "out"
    nearest = prepare_domain(TINY, out, "clothing", seed=0, category_predictor="nearest")
    manifest = json.loads((out / "clothing" / "manifest.json").read_text())
    assert manifest["category_predictor"] == "nearest"
    cats = nearest["categories"]
    assert cats["category_predictor"] == "nearest" and cats["predictor"].startswith("TF-IDF (word unigrams)")
    markdown = (out / "clothing" / "dataset_card.md").read_text()
    assert "by the `nearest` predictor" in markdown
    assert f"leaf accuracy {cats['predictor_holdout']['leaf_accuracy']}" in markdown

    def boom(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(prepare_module, "build_domain", boom)
    assert prepare_domain(TINY, out, "clothing", seed=0, category_predictor="nearest") == nearest
    with pytest.raises(AssertionError, match="recomputed"):  # switching predictor re-prepares
        prepare_domain(TINY, out, "clothing", seed=0)
    monkeypatch.undo()
    linear = prepare_domain(TINY, out, "clothing", seed=0, category_predictor="linear")
    assert linear["categories"]["category_predictor"] == "linear"
    assert json.loads((out / "clothing" / "manifest.json").read_text())["category_predictor"] == "linear"
    assert "by the `linear` predictor" in (out / "clothing" / "dataset_card.md").read_text()
    # Only predicted categories may differ; everything else is the same output.
    assert linear["counts"] == nearest["counts"]
    assert linear["categories"]["items_raw_category"] == cats["items_raw_category"]


def test_unknown_category_predictor(tmp_path):
    with pytest.raises(DataError, match="unknown category predictor 'knn'"):
        prepare(TINY, tmp_path / "out", ["clothing"], category_predictor="knn")
    with pytest.raises(DataError, match="expected one of linear, nearest"):
        prepare_domain(TINY, tmp_path / "out", "clothing", category_predictor="knn")
    _assert_nothing_written(tmp_path / "out")


def test_changed_input_recomputes(tmp_path):
    raw = copy_tiny(tmp_path)
    out = tmp_path / "out"
    prepare_domain(raw, out, "clothing", seed=0)
    edit(raw / "clothing" / "bundle_intent.csv", "denim set", "denim outfit")
    card = prepare_domain(raw, out, "clothing", seed=0)
    rows = {r["bundle_id"]: r for r in read_table(out / "clothing" / "clothing.bundle")[1]}
    assert rows["17"]["intent"] == "denim outfit"
    assert card["inputs"]["clothing/bundle_intent.csv"] != ""


def test_seeded_split_is_deterministic(tmp_path):
    a = prepare_domain(TINY, tmp_path / "a", "clothing", seed=5)
    b = prepare_domain(TINY, tmp_path / "b", "clothing", seed=5)
    assert a == b
    for split in SPLITS:
        assert (tmp_path / "a/clothing" / f"clothing.{split}.inter").read_bytes() == (
            tmp_path / "b/clothing" / f"clothing.{split}.inter"
        ).read_bytes()


# --------------------------------------------------------------------------- errors


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists() or list(out.iterdir()) == []


def test_unknown_domain(tmp_path):
    with pytest.raises(DataError, match="electronic, clothing, food"):
        prepare_domain(TINY, tmp_path / "out", "books")
    with pytest.raises(DataError, match="unknown domain"):
        prepare(TINY, tmp_path / "out", ["clothing", "books"])
    _assert_nothing_written(tmp_path / "out")


def _remove(path: Path) -> None:
    path.unlink()


BROKEN_INPUTS = {
    # name: (file, how to break it, the error it must give)
    "missing file": ("bundle_item.csv", _remove, r"bundle_item\.csv: file not found"),
    "wrong header": ("session_item.csv", lambda p: edit(p, "session ID,item ID", "session,item"),
                     r"session_item\.csv: line 1: expected header 'session ID,item ID'"),
    # line 2 is bundle 0's first item (101, session 0); 162 is not in session 0
    "bundle item not in session": ("bundle_item.csv", lambda p: edit(p, "0,101\n", "0,162\n"),
                                   r"bundle_item\.csv: line 2: item 162 of bundle 0 is not in its session 0"),
    # the intent of bundle 4 spans lines 6-7, so bundle 5 starts on line 8
    "non-integer id": ("bundle_intent.csv", lambda p: edit(p, "5,shirt and tie\n", "x5,shirt and tie\n"),
                       r"bundle_intent\.csv: line 8: bundle ID 'x5' is not an integer"),
    "extra column": ("session_bundle.csv", lambda p: edit(p, "0,0\n", "0,0,7\n"),
                     r"session_bundle\.csv: line 2: expected 2 columns, got 3"),
    "malformed category": ("item_categories.csv", lambda p: edit(p, '101,"[[', '101,"['),
                           r"item_categories\.csv: line 2"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_INPUTS))
def test_broken_input_names_file_and_line_and_writes_nothing(tmp_path, case):
    name, breaker, message = BROKEN_INPUTS[case]
    raw = copy_tiny(tmp_path)
    breaker(raw / "clothing" / name)
    with pytest.raises(DataError, match=message):
        prepare_domain(raw, tmp_path / "out", "clothing")
    _assert_nothing_written(tmp_path / "out")


def test_electronic_needs_aicl_split(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(TINY / "clothing", raw / "electronic")
    with pytest.raises(DataError, match="AICL split not found"):
        prepare_domain(raw, tmp_path / "out", "electronic")
    _assert_nothing_written(tmp_path / "out")


def test_error_keeps_older_output(tmp_path):
    raw = copy_tiny(tmp_path)
    out = tmp_path / "out"
    first = prepare_domain(raw, out, "clothing", seed=0)
    edit(raw / "clothing" / "bundle_item.csv", "0,101\n", "0,162\n")
    with pytest.raises(DataError):
        prepare_domain(raw, out, "clothing", seed=0, force=True)
    assert json.loads((out / "clothing" / "dataset_card.json").read_text()) == first
    assert sorted(p.name for p in out.iterdir()) == ["clothing", "clothing_next"]


def test_write_failure_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing(path, header, rows):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return original(path, header, rows)

    original = outputs_module.write_atomic_table
    monkeypatch.setattr(outputs_module, "write_atomic_table", failing)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        prepare_domain(TINY, out, "clothing", seed=0)
    _assert_nothing_written(out)


def test_default_raw_root(monkeypatch, tmp_path):
    monkeypatch.delenv("BUNDLELLM_RAW_DATA", raising=False)
    assert default_raw_root() is None
    monkeypatch.setenv("BUNDLELLM_RAW_DATA", str(tmp_path))
    assert default_raw_root() == tmp_path


# --------------------------------------------------------------------------- units


def test_parse_category_paths():
    text = "[[Clothing, Shoes & Jewelry,Women,Shoes],[Clothing, Shoes & Jewelry,Novelty, Costumes & More,Hats,Caps]]"
    paths = parse_category_paths(text)
    assert paths == [
        ("Clothing, Shoes & Jewelry", "Women", "Shoes"),
        ("Clothing, Shoes & Jewelry", "Novelty, Costumes & More", "Hats", "Caps"),
    ]
    assert choose_path(paths)[-1] == "Caps"
    assert choose_path([("A", "B"), ("C", "D")]) == ("A", "B")  # first on ties
    assert parse_category_paths("[[]]") == [] and choose_path([]) is None
    with pytest.raises(ValueError):
        parse_category_paths("Electronics")


def test_category_predictor():
    titles = ["silk neck tie", "cotton dress shirt", "leather belt"]
    paths = [("Men", "Ties"), ("Men", "Shirts"), ("Men", "Belts")]
    model = NearestTitlePredictor().fit(titles, paths)
    assert model.predict(["striped silk tie", "oxford shirt", "zzz"]) == [
        ("Men", "Ties"), ("Men", "Shirts"), ("Men", "Ties")  # no shared word -> most frequent (first)
    ]
    result = holdout_accuracy(titles * 4, paths * 4, seed=0, predictor="nearest")
    assert result["n_heldout"] == 2 and result["leaf_accuracy"] == 1.0


def test_dedup_rule():
    def b(i, items, intent=""):
        return Bundle(i, 0, tuple(items), intent)

    result = dedup_bundles([b(1, [1, 2], "short"), b(2, [2, 1], "much longer"), b(3, [1, 2, 3]), b(4, [3, 4])])
    assert [x.bundle_id for x in result.kept] == [2, 4]
    assert (result.identical_removed, result.superset_removed) == (1, 1)
    tie = dedup_bundles([b(5, [1, 2], "Tea"), b(6, [1, 2], "tea")])
    assert [x.bundle_id for x in tie.kept] == [5]


def test_split_sizes():
    assert split_sizes(12) == {"train": 9, "valid": 1, "test": 2}
    assert split_sizes(968) == {"train": 677, "valid": 97, "test": 194}
    assert split_sizes(914) == {"train": 640, "valid": 91, "test": 183}
    assert split_sizes(3) == {"train": 1, "valid": 1, "test": 1}
    parts = seeded_split(range(20), seed=3)
    assert sorted(sum(parts.values(), [])) == list(range(20))
    assert parts == seeded_split(reversed(range(20)), seed=3)
