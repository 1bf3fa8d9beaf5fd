"""Publish a finished benchmark: copy its results.{csv,md} to benchmarks/results/<name>.* and
rewrite the README's table between ``<!-- <name>-table:begin -->`` and ``<!-- <name>-table:end -->``
from them (tests/test_benchmark.py keeps the two equal).

    bundlellm benchmark                                   # outputs/benchmarks/baselines/
    python benchmarks/publish_benchmark.py                # baselines [--from outputs/benchmarks/baselines]
    bundlellm benchmark -c configs/benchmarks/student.yaml
    python benchmarks/publish_benchmark.py --name student
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from recbole_bundlellm.commands.benchmark.tables import readme_block

REPO = Path(__file__).resolve().parents[1]
#: Benchmarks whose table the README shows.
PUBLISHED = ("baselines", "student", "student_orderings", "student_routing")


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}-table:begin -->", f"<!-- {name}-table:end -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="baselines", choices=PUBLISHED)
    parser.add_argument("--from", dest="source", default=None, help="default: outputs/benchmarks/<name>")
    args = parser.parse_args()
    source = Path(args.source or REPO / "outputs/benchmarks" / args.name)
    results = REPO / "benchmarks/results"
    for suffix in ("csv", "md"):
        shutil.copyfile(source / f"results.{suffix}", results / f"{args.name}.{suffix}")
    readme = REPO / "README.md"
    text = readme.read_text(encoding="utf-8")
    begin, end = markers(args.name)
    start, stop = text.index(begin) + len(begin), text.index(end)
    block = readme_block((results / f"{args.name}.csv").read_text(encoding="utf-8"),
                         (results / f"{args.name}.md").read_text(encoding="utf-8"))
    readme.write_text(text[:start] + "\n" + block + "\n" + text[stop:], encoding="utf-8")
    print(f"README.md: {args.name} table from {results / f'{args.name}.csv'}")


if __name__ == "__main__":
    main()
