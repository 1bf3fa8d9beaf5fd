"""Predictions of the deterministic models on the tiny dataset, to show a refactor kept behaviour.

    PYTHONPATH=.:plugins python benchmarks/predictions_fingerprint.py OUT_DIR
    python benchmarks/predictions_fingerprint.py --compare BEFORE_DIR AFTER_DIR

Runs Freq, the four floors, Pairwise and a seeded tiny BundleSFT (a tiny random Llama, one epoch)
on the tiny dataset of the testing kit and copies each run's ``predictions.jsonl`` to
``OUT_DIR/<name>.jsonl``. ``--compare`` reports, per file, whether two such folders hold the very
same bytes (exit status 1 if any differs or is missing). Run it on the code before and after a
change that must not change behaviour.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: name -> (model, config overrides)
RUNS: dict[str, tuple[str, dict]] = {
    "Freq": ("Freq", {}),
    **{f"Floor-{rule}": ("Floor", {"floor_rule": rule})
       for rule in ("whole_session", "first_two", "adjacent_pairs", "random_pairs")},
    "Pairwise": ("Pairwise", {}),
    "BundleSFT": ("BundleSFT", {"max_new_tokens": 6, "epochs": 1, "train_batch_size": 4, "eval_step": 0,
                                "label_bias_grid": [], "seed": 2020}),
}


def produce(out: Path) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_llm import make_tiny_llm

    from recbole_bundlellm.testing import Workspace

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, Workspace(Path(tmp) / "ws") as ws:
        llm = make_tiny_llm(Path(tmp) / "tiny_llm" / "model")
        for name, (model, overrides) in RUNS.items():
            if model == "BundleSFT":
                overrides = {"llm_model": str(llm), **overrides}
            result = ws.run(model, **overrides)
            shutil.copyfile(result.output_dir / "predictions.jsonl", out / f"{name}.jsonl")
            print(name, result.test_result.get("exactf1"), flush=True)


def compare(before: Path, after: Path) -> int:
    bad = 0
    for name in RUNS:
        a, b = before / f"{name}.jsonl", after / f"{name}.jsonl"
        same = a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()
        bad += not same
        print(f"{name}: {'identical' if same else 'DIFFERENT or missing'}")
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path)
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    if args.out is None:
        parser.error("give OUT_DIR or --compare BEFORE AFTER")
    produce(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
