"""One table of finished runs (their metrics.json), both metric families, with what each cost.

    python benchmarks/study_table.py --out benchmarks/results/electronic_studies \
        outputs/electronic/Freq outputs/electronic/floor:* outputs/electronic/studies/format/*

Writes <out>.md (the table) and <out>.json (every run's test metrics, timing, training and the
command that produced it). Reads only what runs wrote; runs nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = [("exactf1", "exact F1"), ("bestjaccard", "best Jacc."), ("bundleprecision", "B-prec"),
           ("bundlerecall", "B-rec"), ("bundlecoverage", "cover"), ("failurerate", "fail"),
           ("wholesessionshare", "whole"), ("predictedbundles", "#pred"), ("truebundles", "#true")]


def _command(value: str | list[str] | None) -> str:
    return value if isinstance(value, str) else " ".join(value or [])


def load(folder: Path) -> dict:
    data = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    training = data.get("info", {}).get("training", {})
    return {
        "run": data["run_name"], "model": data["model"], "folder": str(folder), "test": data["test"],
        "sessions": data["timing"].get("eval_sessions"),
        "train_seconds": training.get("train_seconds"), "valid_seconds": training.get("valid_seconds"),
        "reused_adapter": training.get("reused_adapter"),
        "seconds_per_session": data["timing"].get("seconds_per_session"),
        "command": _command(data.get("command")), "training": training,
        "views": data.get("info", {}).get("views"), "knowledge": data.get("info", {}).get("knowledge"),
        "decoding": data.get("info", {}).get("decoding"),
        "routing": data.get("info", {}).get("routing"), "router": data.get("info", {}).get("router"),
    }


def _cell(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _labels(rows: list[dict]) -> list[str]:
    """Run names, with the folder's name where two runs share one (ablations of one config)."""
    names = [r["run"] for r in rows]
    return [f"{r['run']} [{Path(r['folder']).name}]" if names.count(r["run"]) > 1 else r["run"] for r in rows]


def _decoding(row: dict) -> str:
    tuned = row.get("decoding")
    if not tuned:
        return "greedy"
    return f"calibrated (none {tuned['none_bias']:g}, new {tuned['new_bundle_bias']:g})"


def _routing(row: dict) -> str:
    """RouteDK rows: the mean weight of each expert over the test sessions (and the entropy)."""
    routing = row.get("routing")
    if not routing:
        return "-"
    weights = " ".join(f"{kind} {w:.2f}" for kind, w in routing["mean_weight"].items())
    return f"{weights} (H {routing['mean_entropy']:.2f})"


def markdown(rows: list[dict]) -> str:
    for row, label in zip(rows, _labels(rows)):
        row["label"] = label
    routed = any(r.get("routing") for r in rows)
    head = ["run", *(name for _, name in COLUMNS), "train min", "s/session", "decoding",
            *(["routing weights"] if routed else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        train = r["train_seconds"] / 60 if r["train_seconds"] else None
        cells = [r["label"], *(_cell(r["test"].get(key)) for key, _ in COLUMNS), _cell(train, 1),
                 _cell(r["seconds_per_session"], 2), _decoding(r), *([_routing(r)] if routed else [])]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Test sessions per run: {sorted({r['sessions'] for r in rows})}.")
    lines.extend(f"- {r['label']}: `{r['command']}`" for r in rows)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="path stem of the .md and .json written")
    args = parser.parse_args()
    rows = [load(f) for f in args.folders if (f / "metrics.json").is_file()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(rows)
    args.out.with_suffix(".md").write_text(text, encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
