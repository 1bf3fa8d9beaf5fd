"""The tiny dataset: a hand-built raw domain in the upstream layout, shipped with the package.

13 sessions shaped as the ``clothing`` domain (most bundles pair a shirt with a tie); prepared
with seed 0 the split is train 9 (sessions 0 2 3 4 5 6 7 9 11) / valid 1 (10) / test 2 (1 8).
``data/tiny_raw/README.md`` describes every row that matters.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: The dataset name of the tiny data (``dataset:`` in a config).
TINY_DOMAIN = "clothing"
#: The split seed the counts above are for.
TINY_SEED = 0


def tiny_raw_dir() -> Path:
    """The raw tiny dataset's root (``<root>/clothing/*.csv``), inside the installed package."""
    return Path(__file__).resolve().parent / "data" / "tiny_raw"


def prepare_tiny_data(out: str | os.PathLike) -> Path:
    """Prepare the tiny dataset into ``out`` (RecBole atomic files in ``out/clothing/``) and
    return ``out``: the ``data_path`` of a config. Already prepared there: returned at once."""
    from recbole_bundlellm.data import prepare_domain

    out = Path(out)
    prepare_domain(tiny_raw_dir(), out, TINY_DOMAIN, seed=TINY_SEED)
    return out


def tiny_sessions(data_path: str | os.PathLike, *, host: Any = None) -> list[Any]:
    """The tiny dataset's training sessions (with bundles and intents), as an extractor and a
    sampler see them, read through RecBole like a distillation reads them.

    ``data_path``: where :func:`prepare_tiny_data` wrote. ``host``: a plugin host with the
    built-in ``models`` plugin (default: the built-in plugins only).
    """
    from recbole_bundlellm.config import BundleConfig
    from recbole_bundlellm.data.training import load_training_sessions
    from recbole_bundlellm.testing.host import plugin_host

    own = host is None
    host = host or plugin_host()
    try:
        config = BundleConfig("Freq", TINY_DOMAIN, [], {"data_path": str(data_path)}, host=host)
        return load_training_sessions(config)
    finally:
        if own:
            host.close()


__all__ = ["TINY_DOMAIN", "TINY_SEED", "prepare_tiny_data", "tiny_raw_dir", "tiny_sessions"]
