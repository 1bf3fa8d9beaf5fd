"""Category predictors: hold-out accuracy, and what their labels do to Freq, per domain.

    .venv/bin/python benchmarks/bench_categories.py [--variants] [--out benchmarks/results/categories.json]

For every domain and every predictor in ``CATEGORY_PREDICTORS`` the domain is prepared into a
temporary folder (``prepare(..., category_predictor=name)``) and the JSON records:

* ``holdout``: the dataset card's hold-out (fit on a seeded 80 % of training-bundle items, scored
  on the other 20 %), leaf and full-path accuracy;
* ``valid_test_bundle_items``: the leaf accuracy of the labels actually written for the items of
  valid/test bundles, scored against their raw categories (which preparation never reads);
* ``freq`` and ``floor_whole_session``: test metrics on the full test split, run through the
  project's runner with ``configs/<domain>/freq.yaml``.

``--variants`` adds the hold-out accuracy (card seed, and the mean over three seeds) of the
linear predictor's variants tried while choosing its defaults. Needs the raw data
(``--raw`` or ``$BUNDLELLM_RAW_DATA``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import recbole_bundlellm  # noqa: F401  (compat patches before recbole)
from recbole_bundlellm.data import CATEGORY_PREDICTORS, DOMAINS, prepare_domain
from recbole_bundlellm.data.categories import CategoryPath
from recbole_bundlellm.data.category_predictors import (
    CategoryPredictor,
    LinearTitlePredictor,
    NearestTitlePredictor,
    holdout_accuracy,
)
from recbole_bundlellm.data.item_categories import raw_category_path
from recbole_bundlellm.data.raw import read_domain

METRICS = ("exactf1", "bestjaccard", "bundleprecision", "bundlerecall", "failurerate")
SEED = 2024  # prepare's default: the card's hold-out seed
VARIANT_SEEDS = (2024, 1, 2)


class PathTargetPredictor(LinearTitlePredictor):
    """Variant: one classifier over full paths (no leaf step)."""

    def fit(self, titles: Sequence[str], paths: Sequence[CategoryPath]) -> PathTargetPredictor:
        self._features = self._features_union()
        x = self._features.fit_transform(titles)
        self._paths = sorted(set(paths))
        self._path_model = self._fit_classifier(x, list(paths), self._paths)
        return self

    def predict(self, titles: Sequence[str]) -> list[CategoryPath]:
        return [self._paths[i] for i in self._path_model.predict(self._features.transform(titles))]


VARIANTS: dict[str, Callable[[], CategoryPredictor]] = {
    "nearest (old)": NearestTitlePredictor,
    "linear (chosen): words 1-2 + chars 2-5, C=0.7, leaf then path": LinearTitlePredictor,
    "word unigrams": lambda: LinearTitlePredictor(word_ngrams=(1, 1)),
    "word unigrams, C=0.5": lambda: LinearTitlePredictor(word_ngrams=(1, 1), C=0.5),
    "words only (no chars)": lambda: LinearTitlePredictor(char_ngrams=None),
    "chars 2-5 only (no words)": lambda: LinearTitlePredictor(word_ngrams=None),
    "chars 3-5": lambda: LinearTitlePredictor(char_ngrams=(3, 5)),
    "chars 1-5": lambda: LinearTitlePredictor(char_ngrams=(1, 5)),
    "C=0.3": lambda: LinearTitlePredictor(C=0.3),
    "C=0.5": lambda: LinearTitlePredictor(C=0.5),
    "C=1": lambda: LinearTitlePredictor(C=1.0),
    "class_weight=balanced": lambda: LinearTitlePredictor(class_weight="balanced"),
    "digits kept": lambda: LinearTitlePredictor(blank_digits=False),
    "path target (no leaf step)": PathTargetPredictor,
}


def training_items(out_root: Path, domain: str) -> tuple[list[str], list[CategoryPath]]:
    """Titles and raw paths of the items the predictor is fit on (category_source raw)."""
    rows = read_item_rows(out_root / domain / f"{domain}.item")
    fit = [(r["title"], tuple(r["category_path"].split(" > "))) for r in rows if r["category_source"] == "raw"]
    return [t for t, _ in fit], [p for _, p in fit]


def read_item_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a prepared ``.item`` file as ``{field: value}``."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        names = [h.split(":")[0] for h in next(reader)]
        return [dict(zip(names, row)) for row in reader]


def written_label_accuracy(raw_root: Path, out_root: Path, domain: str) -> dict:
    """Leaf accuracy of the predicted labels of items that have a raw category (valid/test bundle items)."""
    raw = read_domain(raw_root, domain)
    hits = total = 0
    for row in read_item_rows(out_root / domain / f"{domain}.item"):
        if row["category_source"] != "predicted":
            continue
        truth = raw_category_path(raw, int(row["item_id"]))
        if truth is None:
            continue
        total += 1
        hits += row["category"] == truth[-1]
    return {"n_items": total, "leaf_accuracy": round(hits / max(total, 1), 4)}


def run_test_metrics(model: str, domain: str, data_path: Path, out: Path, extra: dict) -> dict:
    from recbole_bundlellm.commands.runner import run

    files = [str(REPO / "configs" / domain / "freq.yaml")] if model == "Freq" else []
    config = {"eval_max_sessions": None, "data_path": str(data_path), **extra}
    result = run(model, domain, files, config, output_dir=out)
    return {"sessions": result.timing.get("eval_sessions"), **{k: result.test_result[k] for k in METRICS}}


def bench_predictor(raw_root: Path, work: Path, domain: str, name: str) -> dict:
    out_root = work / name
    start = time.perf_counter()
    card = prepare_domain(raw_root, out_root, domain, seed=SEED, category_predictor=name, force=True)
    seconds = time.perf_counter() - start
    hold = card["categories"]["predictor_holdout"]
    return {
        "prepare_seconds": round(seconds, 2),
        "holdout": {k: hold[k] for k in ("n_fit", "n_heldout", "leaf_accuracy", "path_accuracy")},
        "valid_test_bundle_items": written_label_accuracy(raw_root, out_root, domain),
        "freq": run_test_metrics("Freq", domain, out_root, work / "runs" / name / "Freq", {}),
        "floor_whole_session": run_test_metrics(
            "Floor", domain, out_root, work / "runs" / name / "floor",
            {"floor_rule": "whole_session", "run_name": "floor:whole_session"},
        ),
    }


def bench_variants(titles: list[str], paths: list[CategoryPath]) -> dict:
    out = {}
    for label, make in VARIANTS.items():
        scores = [_holdout(make, titles, paths, seed) for seed in VARIANT_SEEDS]
        out[label] = {
            "leaf_accuracy": scores[0][0],
            "path_accuracy": scores[0][1],
            "leaf_accuracy_mean_3_seeds": round(float(np.mean([s[0] for s in scores])), 4),
        }
        print(f"  {label}: {out[label]}", flush=True)
    return out


def _holdout(make: Callable[[], CategoryPredictor], titles: list[str], paths: list[CategoryPath],
             seed: int) -> tuple[float, float]:
    result = holdout_accuracy(titles, paths, seed=seed, predictor=make)
    return result["leaf_accuracy"], result["path_accuracy"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", default=os.environ.get("BUNDLELLM_RAW_DATA"), help="raw data root")
    parser.add_argument("--domain", action="append", choices=DOMAINS, help="repeatable; default all three")
    parser.add_argument("--variants", action="store_true", help="also score the linear predictor's variants")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "categories.json"))
    args = parser.parse_args()
    if not args.raw:
        raise SystemExit("pass --raw or set $BUNDLELLM_RAW_DATA")
    raw_root = Path(args.raw)

    domains: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_categories-") as tmp:
        for domain in args.domain or DOMAINS:
            work = Path(tmp) / domain
            domains[domain] = {"predictors": {}}
            for name in CATEGORY_PREDICTORS:
                print(f"{domain} / {name}", flush=True)
                domains[domain]["predictors"][name] = bench_predictor(raw_root, work, domain, name)
            if args.variants:
                titles, paths = training_items(work / "linear", domain)
                print(f"{domain} variants ({len(titles)} training-bundle items)", flush=True)
                domains[domain]["variants"] = bench_variants(titles, paths)
    result = {
        "benchmark": "categories",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "seed": SEED,
        "metrics": list(METRICS),
        "domains": domains,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(table(result))
    print(f"wrote {out}")
    return 0


def table(result: dict) -> str:
    """A plain-text summary: one row per domain and predictor."""
    header = (
        "domain      predictor  hold-out leaf/path  val+test items  Freq F1  Jacc   P      R      "
        "fail   | whole-session F1  Jacc"
    )
    lines = [header]
    for domain, entry in result["domains"].items():
        for name, r in entry["predictors"].items():
            h, f, w = r["holdout"], r["freq"], r["floor_whole_session"]
            lines.append(
                f"{domain:11s} {name:10s} {h['leaf_accuracy']:.4f}/{h['path_accuracy']:.4f}     "
                f"{r['valid_test_bundle_items']['leaf_accuracy']:.4f}          "
                f"{f['exactf1']:.4f}  {f['bestjaccard']:.4f} {f['bundleprecision']:.4f} {f['bundlerecall']:.4f} "
                f"{f['failurerate']:.4f} | {w['exactf1']:.4f}            {w['bestjaccard']:.4f}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
