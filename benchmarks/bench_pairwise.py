"""Pairwise vs Freq vs the four floors on the full test split of every domain, and its variants on valid.

    .venv/bin/python benchmarks/bench_pairwise.py --data DATA [--variants] [--out benchmarks/results/pairwise.json]

``--data``: prepared atomic files (``bundlellm data prepare``, default category predictor);
default ``$BUNDLELLM_DATA``. For each domain this runs what

    bundlellm compare configs/<domain>/pairwise.yaml configs/<domain>/freq.yaml --floors --full

runs (in a temporary working directory, so no outputs land in the repository) and records exact
F1, best Jaccard, precision, recall, failure rate and the fit / tune / generate seconds of every
row, plus what Pairwise chose on valid. ``--variants`` also fits each of :data:`VARIANTS` on
train, tunes it on valid and records its valid exact F1 and best Jaccard (the numbers the defaults
were chosen by; test is never looked at for that).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "plugins"))

import recbole_bundlellm  # noqa: E402,F401  (compat patches before recbole)
from recbole_bundlellm.data import DOMAINS  # noqa: E402

METRICS = {"exact_f1": "exactf1", "best_jaccard": "bestjaccard", "precision": "bundleprecision",
           "recall": "bundlerecall", "failure_rate": "failurerate"}

#: Settings tried besides the defaults of Pairwise.yaml (name -> overrides).
VARIANTS: dict[str, dict[str, Any]] = {
    "default (hgb 100 iterations x 7 leaves)": {},
    "hgb 60 x 7": {"pairwise_max_iter": 60, "pairwise_max_leaf_nodes": 7},
    "hgb 100 x 4": {"pairwise_max_iter": 100, "pairwise_max_leaf_nodes": 4},
    "hgb 200 x 15": {"pairwise_max_iter": 200, "pairwise_max_leaf_nodes": 15},
    "hgb 300 x 31": {"pairwise_max_iter": 300, "pairwise_max_leaf_nodes": 31},
    "logistic regression": {"pairwise_classifier": "logistic"},
    "training categories re-predicted out of fold": {"pairwise_train_categories": "predicted"},
    "in-sample counts (folds 1)": {"pairwise_folds": 1},
    "average linkage + whole fallback only": {"pairwise_tune_groupings": ["average"], "pairwise_tune_fallbacks": ["whole"]},
    "connected components + whole fallback only": {"pairwise_tune_groupings": ["connected"], "pairwise_tune_fallbacks": ["whole"]},
    "no fallback (failed session when nothing passes)": {"pairwise_tune_fallbacks": ["none"]},
}


def compare_domain(domain: str, data: Path) -> dict[str, Any]:
    """The compare command on one domain: Pairwise, Freq and the floors on the full test split."""
    from recbole_bundlellm.commands.compare import compare

    configs = [REPO / "configs" / domain / "pairwise.yaml", REPO / "configs" / domain / "freq.yaml"]
    overrides = {"data_path": str(data), "eval_max_sessions": None}
    old = Path.cwd()
    with tempfile.TemporaryDirectory() as work:
        os.chdir(work)  # RecBole and the runner write ./log* and ./outputs here
        try:
            results = compare(configs, overrides, floors=True)
        finally:
            os.chdir(old)
    rows = {}
    for r in results:
        row = {key: round(float(r.test_result[name]), 4) for key, name in METRICS.items()}
        row.update({
            "fit_seconds": round(r.timing.get("fit_seconds", 0.0), 3),
            "tune_seconds": round(r.timing.get("tune_seconds", 0.0), 3),
            "generate_seconds": round(r.timing.get("eval_seconds", 0.0), 3),
            "test_sessions": int(r.timing.get("eval_sessions", 0)),
        })
        if r.model == "Pairwise":
            row["tuned_on_valid"] = r.info
        rows[r.run_name] = row
    return rows


def load_sessions(domain: str, data: Path) -> dict[str, list]:
    """The train / valid sessions of a prepared domain, read through RecBole."""
    from recbole.data import create_dataset, data_preparation

    from recbole_bundlellm.config import BundleConfig
    from recbole_bundlellm.data.sessions import sessions_from_dataset

    config = BundleConfig("Pairwise", domain, [], {"data_path": str(data)})
    train, valid, _ = data_preparation(config, create_dataset(config))
    return {"train": sessions_from_dataset(train.dataset), "valid": sessions_from_dataset(valid.dataset)}


def variant_scores(sessions: dict[str, dict[str, list]]) -> dict[str, Any]:
    """Valid exact F1 / best Jaccard (after tuning) of every variant, per domain and averaged."""
    import yaml

    from recbole_bundlellm.models.baselines.pairwise import Pairwise

    defaults = yaml.safe_load((REPO / "recbole_bundlellm" / "models" / "baselines" / "Pairwise.yaml").read_text(encoding="utf-8"))
    out: dict[str, Any] = {}
    for name, overrides in VARIANTS.items():
        per_domain = {}
        for domain, split in sessions.items():
            model = Pairwise({**defaults, **overrides}, None)
            start = time.perf_counter()
            model.fit_bundles(split["train"])
            fit = time.perf_counter() - start
            chosen = model.tune(split["valid"])
            per_domain[domain] = {"valid_exact_f1": chosen["valid_exact_f1"],
                                  "valid_best_jaccard": chosen["valid_best_jaccard"],
                                  "grouping": chosen["grouping"], "fit_seconds": round(fit, 2)}
        mean = {k: round(sum(d[k] for d in per_domain.values()) / len(per_domain), 4)
                for k in ("valid_exact_f1", "valid_best_jaccard")}
        out[name] = {"overrides": overrides, "mean": mean, "domains": per_domain}
        print(f"{name}: {mean}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("BUNDLELLM_DATA"), help="prepared data root")
    parser.add_argument("--variants", action="store_true", help="also score the variants on valid")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "pairwise.json"))
    args = parser.parse_args()
    if not args.data:
        raise SystemExit("error: give --data (or set $BUNDLELLM_DATA) to a prepared data root")
    data = Path(args.data).resolve()
    report: dict[str, Any] = {
        "command": "bundlellm compare configs/<domain>/pairwise.yaml configs/<domain>/freq.yaml --floors --full",
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "data": {d: json.loads((data / d / "manifest.json").read_text(encoding="utf-8")).get("category_predictor")
                 for d in DOMAINS},
        "test": {},
    }
    for domain in DOMAINS:
        report["test"][domain] = compare_domain(domain, data)
        rows = report["test"][domain]
        print(domain, {name: (row["exact_f1"], row["best_jaccard"]) for name, row in rows.items()}, flush=True)
    if args.variants:
        report["variants_on_valid"] = variant_scores({d: load_sessions(d, data) for d in DOMAINS})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
