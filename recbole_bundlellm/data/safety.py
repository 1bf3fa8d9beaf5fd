"""Guards around writing a prepared domain, which replaces ``out/<domain>/`` and
``out/<domain>_next/`` whole (see :mod:`.outputs`):

* the output root must be apart from the raw data root (else the swap could delete raw files);
* only folders that hold nothing but what ``prepare`` wrote may be replaced;
* one process at a time writes a domain of an output root (an ``flock`` on a lock file).

A folder holding anything else is refused, not merged: keeping a user's file would mean moving
it into the new folder during the swap, and a crash half-way would leave it in a hidden
temporary folder; refusing keeps the swap one atomic rename and deletes nothing it did not write.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recbole_bundlellm.data.raw import DataError
from recbole_bundlellm.fileio import FileLocked, file_lock

#: What prepare writes into ``out/<domain>/`` besides the tables listed in the card's "files".
OWN_FILES = ("dataset_card.json", "dataset_card.md", "manifest.json")
#: Seconds a second writer waits for the first; writing one domain takes a few seconds at most.
LOCK_TIMEOUT_S = 120.0
_MAX_LISTED = 5


def check_out_apart_from_raw(raw_root: Path, out_root: Path) -> None:
    """Raise :class:`DataError` when ``out_root`` is not a folder (an existing file), or when it
    is, contains or lies inside ``raw_root``."""
    if Path(out_root).exists() and not Path(out_root).is_dir():
        raise DataError(f"output folder {out_root} is a file, not a folder; give --out a folder (new or "
                        "one that prepare wrote)")
    raw, out = Path(raw_root).resolve(), Path(out_root).resolve()
    if out == raw:
        relation = "is"
    elif raw in out.parents:
        relation = "lies inside"
    elif out in raw.parents:
        relation = "contains"
    else:
        return
    shown = f" (resolved: {out} and {raw})" if (str(out), str(raw)) != (str(out_root), str(raw_root)) else ""
    raise DataError(
        f"output folder {out_root} {relation} the raw data folder {raw_root}{shown}; preparing "
        "replaces whole folders there and could delete raw files: choose another --out"
    )


def check_replaceable(out_root: Path, domain: str) -> None:
    """Raise :class:`DataError` unless ``out_root/<domain>{,_next}/`` hold only files prepare wrote."""
    written = written_files(out_root, domain)
    foreign = [
        entry
        for name in (domain, f"{domain}_next")
        for entry in _foreign_entries(out_root, name, written)
    ]
    if not foreign:
        return
    listed = ", ".join(foreign[:_MAX_LISTED])
    if len(foreign) > _MAX_LISTED:
        listed += f" and {len(foreign) - _MAX_LISTED} more"
    one = len(foreign) == 1
    raise DataError(
        f"{out_root}: {listed} {'was' if one else 'were'} not written by `bundlellm data prepare`, "
        f"which replaces {domain}/ and {domain}_next/ whole; move {'it' if one else 'them'} "
        "elsewhere or choose another --out"
    )


def written_files(out_root: Path, domain: str) -> set[str]:
    """Paths (relative to ``out_root``) that an earlier ``prepare`` of ``domain`` wrote there.

    Recognised by its manifest and card; empty when ``out_root/<domain>/`` holds neither.
    """
    folder = out_root / domain
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        card = json.loads((folder / "dataset_card.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    ours = (
        isinstance(manifest, dict)
        and manifest.get("domain") == domain
        and str(manifest.get("code_version", "")).startswith("recbole_bundlellm ")
        and isinstance(card, dict)
        and isinstance(card.get("files"), list)
    )
    if not ours:
        return set()
    # The card lists the tables relative to <domain>/ (the next-item file as ../<domain>_next/...).
    return {posixpath.normpath(f"{domain}/{name}") for name in [*card["files"], *OWN_FILES]}


def _foreign_entries(out_root: Path, name: str, written: set[str]) -> list[str]:
    """What replacing ``out_root/name`` would delete that is not in ``written``."""
    folder = out_root / name
    if folder.is_symlink():  # renaming a link away would lose the link, and maybe its target
        return [f"{name} (a symbolic link)"]
    if not folder.exists():
        return []
    if not folder.is_dir():
        return [f"{name} (a file where the output folder goes)"]
    foreign = []
    for entry in sorted(folder.iterdir()):
        rel = f"{name}/{entry.name}"
        if entry.is_symlink() or not entry.is_file():
            foreign.append(rel + ("/" if entry.is_dir() and not entry.is_symlink() else ""))
        elif rel not in written:
            foreign.append(rel)
    return foreign


def lock_path(out_root: Path, domain: str) -> Path:
    """The lock file that writers of ``out_root/<domain>`` hold."""
    return out_root / f".{domain}.prepare.lock"


@contextmanager
def output_lock(out_root: Path, domain: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the write lock of ``out_root/<domain>``; wait up to ``timeout`` s, then DataError.

    The lock file is removed on release, so a finished prepare leaves only its outputs.
    """
    out_root.mkdir(parents=True, exist_ok=True)
    path = lock_path(out_root, domain)
    # The lock file is removed on release (while still held): a waiter that then gets the lock on
    # the nameless file sees it is stale and starts over on a fresh one.
    try:
        with file_lock(path, timeout=timeout, remove=True):
            yield
    except FileLocked as exc:
        if exc.path != path:
            raise
        raise DataError(f"another process is writing {out_root / domain} (it holds {path}); waited {timeout:g} s: "
                        "try again when it has finished") from None
