"""Build a registered model on prepared data as the runner would, without running it (tests that
look inside a model: its prompts, states, routing)."""

from __future__ import annotations

from typing import Any


def built_model(name: str, config_dict: dict, host: Any = None, dataset: str = "clothing") -> tuple[Any, Any]:
    """The model ``name`` built on ``dataset`` with ``config_dict``, and RecBole's (train, valid,
    test) loaders for it."""
    from recbole.data import create_dataset, data_preparation

    from recbole_bundlellm.config import BundleConfig
    from recbole_bundlellm.extension.host import PluginHost

    config = BundleConfig(name, dataset, [], config_dict, host=host)
    splits = data_preparation(config, create_dataset(config))
    return PluginHost().models.resolve(name).model_class(config, splits[0].dataset), splits
