"""What an output was made from (input hashes, seed, predictor, code version) and whether a
stored output is still up to date."""

from __future__ import annotations

import json
from pathlib import Path

from recbole_bundlellm import __version__
from recbole_bundlellm.data.raw import (
    AICL_DIR,
    AICL_DOMAIN,
    AICL_FILES,
    USED_FILES,
    DataError,
    read_aicl_split,
)
from recbole_bundlellm.fileio import sha256_file

# Bump when the output format or any rule changes, so stored outputs are rebuilt.
# 3: the category predictor is chosen by name and recorded in the manifest and card.
PREPARE_FORMAT = "3"
CODE_VERSION = f"recbole_bundlellm {__version__} / prepare format {PREPARE_FORMAT}"


def input_files(raw_root: Path, domain: str) -> list[Path]:
    """The raw files preparing ``domain`` reads (plus AICL's for the AICL domain)."""
    folder = Path(raw_root) / domain
    files = [folder / name for name in USED_FILES]
    if domain == AICL_DOMAIN:
        files.append(folder / "item_idx_mapping.csv")
        files += [folder / AICL_DIR / name for name in AICL_FILES]
    return files


def input_hashes(raw_root: Path, domain: str) -> dict[str, str]:
    """SHA-256 of every input file, keyed by its path relative to ``raw_root``."""
    if not (Path(raw_root) / domain).is_dir():
        raise DataError(f"{Path(raw_root) / domain}: raw data folder not found")
    out = {}
    for path in input_files(raw_root, domain):
        if not path.is_file():
            if path.parent.name == AICL_DIR:
                read_aicl_split(raw_root, domain)  # raises the explanatory error
            raise DataError(f"{path}: file not found")
        out[path.relative_to(raw_root).as_posix()] = sha256_file(path)
    return out


def make_manifest(domain: str, seed: int, category_predictor: str, inputs: dict[str, str]) -> dict:
    """Everything an output depends on: equal manifests mean an equal output."""
    return {
        "domain": domain,
        "seed": seed,
        "category_predictor": category_predictor,
        "code_version": CODE_VERSION,
        "inputs": inputs,
    }


def stored_card(out_root: Path, domain: str, manifest: dict) -> dict | None:
    """The stored dataset card when ``out_root`` holds a complete output for ``manifest``, else None."""
    folder = out_root / domain
    try:
        stored = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        if stored != manifest or not (out_root / f"{domain}_next" / f"{domain}_next.inter").is_file():
            return None
        return json.loads((folder / "dataset_card.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
