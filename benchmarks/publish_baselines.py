"""Publish a finished default benchmark: copy its results.{csv,md} to benchmarks/results/baselines.*
and rewrite the README's table from them (tests/test_benchmark.py keeps the two equal).

    bundlellm benchmark                       # outputs/benchmarks/baselines/
    python benchmarks/publish_baselines.py    # [--from outputs/benchmarks/baselines]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from recbole_bundlellm.commands.benchmark.tables import readme_block

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- baselines-table:begin -->", "<!-- baselines-table:end -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", default=str(REPO / "outputs/benchmarks/baselines"))
    args = parser.parse_args()
    results = REPO / "benchmarks/results"
    for suffix in ("csv", "md"):
        shutil.copyfile(Path(args.source) / f"results.{suffix}", results / f"baselines.{suffix}")
    readme = REPO / "README.md"
    text = readme.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    block = readme_block((results / "baselines.csv").read_text(encoding="utf-8"),
                         (results / "baselines.md").read_text(encoding="utf-8"))
    readme.write_text(text[:start] + "\n" + block + "\n" + text[end:], encoding="utf-8")
    print(f"README.md: baselines table from {results / 'baselines.csv'}")


if __name__ == "__main__":
    main()
