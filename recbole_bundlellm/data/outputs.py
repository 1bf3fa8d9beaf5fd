"""Writing one prepared domain: build everything in a temporary folder, then swap it in."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from recbole_bundlellm.data.atomic import NEXT_HEADER, Header, write_atomic_table
from recbole_bundlellm.data.card import render_card_markdown
from recbole_bundlellm.fileio import replace_folder


@dataclass
class BuiltDomain:
    """Everything to write for one domain, kept in memory until it is all valid."""

    tables: dict[str, tuple[Header, list[tuple]]]  # file name -> (header, rows)
    next_rows: list[tuple]  # rows of ../<domain>_next/<domain>_next.inter
    card: dict


def write_outputs(built: BuiltDomain, out_root: Path, domain: str, manifest: dict) -> None:
    """Write ``out_root/<domain>/`` and ``out_root/<domain>_next/``; nothing partial is left."""
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
        replace_folder(nxt, out_root / f"{domain}_next")
        replace_folder(main, out_root / domain)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
