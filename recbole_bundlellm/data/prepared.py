"""Checking that a run's prepared dataset is there before RecBole tries to load it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from recbole_bundlellm.data.raw import DataError


class PreparedDataMissing(DataError, FileNotFoundError):
    """The atomic files a run needs are not there.

    A :class:`DataError` for the data package's callers and a ``FileNotFoundError`` for
    everyone who caught it as one before it moved here.
    """


class ConfigLike(Protocol):
    """Anything read like a RecBole Config (``config["data_path"]``); kept structural so this
    package need not import ``recbole_bundlellm.config``."""

    def __getitem__(self, key: str) -> Any: ...


def needed_files(data_path: str | Path, dataset: str, benchmark_filename: Sequence[str] | None) -> list[Path]:
    """The ``.inter`` files RecBole reads for ``dataset`` under ``data_path`` (one per split, or one)."""
    path = Path(data_path)
    if benchmark_filename:
        return [path / f"{dataset}.{part}.inter" for part in benchmark_filename]
    return [path / f"{dataset}.inter"]


def check_prepared(config: ConfigLike) -> None:
    """Raise :class:`PreparedDataMissing` naming the first missing atomic file.

    Reads ``data_path``, ``dataset`` and ``benchmark_filename`` from ``config``.
    """
    path = Path(config["data_path"])
    name = config["dataset"]
    missing = [p for p in needed_files(path, name, config["benchmark_filename"]) if not p.is_file()]
    if missing:
        raise PreparedDataMissing(
            f"prepared dataset '{name}' not found: {missing[0]} is missing. Run "
            f"`bundlellm data prepare --raw <raw dir> --out {path.parent}` first "
            "(or set data_path / $BUNDLELLM_DATA to where it was prepared)"
        )
