"""The training sessions of a domain, read through RecBole's own dataset.

Used by the distillation (the sessions to extract from, and other domains' sessions for
multi-domain sampling) and by a student run that rebuilds a knowledge set from the store; it
sits in the data layer so both can reach it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recbole_bundlellm.data.sessions import Session


def load_training_sessions(config: Any, dataset: str | None = None) -> list[Session]:
    """The training sessions of ``dataset`` (default: the config's), with bundles and intents.

    ``config`` is a :class:`~recbole_bundlellm.config.BundleConfig` (read by duck typing: item
    access and ``with_dataset``, so this layer does not import the configuration).
    """
    from recbole.data import create_dataset

    from recbole_bundlellm.data.prepared import check_prepared
    from recbole_bundlellm.data.sessions import read_intents, sessions_from_dataset

    if dataset is not None and dataset != config["dataset"]:
        config = config.with_dataset(dataset)
    check_prepared(config)
    train = create_dataset(config).build()[0]
    folder = Path(config["data_path"])
    return sessions_from_dataset(train, intents=read_intents(folder / f"{config['dataset']}.bundle"))


__all__ = ["load_training_sessions"]
