"""``BundleConfig``: RecBole's Config with this project's YAML overlaid, and unknown keys reported.

Order of precedence (lowest first): RecBole's defaults, our ``properties/overall.yaml`` (for
bundle models) or ``properties/next_item.yaml`` (for RecBole models on a ``*_next`` dataset),
the model's own YAML from the registry, then the user's files and dict. The command line is
not read here: the CLI passes ``--key=value`` pairs in as a dict, so tests and library users
never have their ``sys.argv`` parsed behind their back."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import recbole_bundlellm  # noqa: F401  (compat patches before recbole)
from recbole.config import Config

from recbole_bundlellm.config.files import BUNDLE_OVERALL, NEXT_ITEM_OVERALL, NEXT_ITEM_SUFFIX, ConfigError, _yaml_keys
from recbole_bundlellm.config.host import SETTINGS_BLOCKS, check_host, check_metrics, check_settings_blocks, host_for
from recbole_bundlellm.config.keys import check_keys, check_read_keys, known_config_keys
from recbole_bundlellm.config.ranges import check_numeric_settings
from recbole_bundlellm.extension.host import PluginHost
from recbole_bundlellm.extension.registry import ModelSpec
from recbole_bundlellm.training.distributed import init_distributed, torchrun_settings

class BundleConfig(Config):
    """:class:`recbole.config.Config` that knows this project's models and YAML files.

    ``host`` is the plugin host whose models, metrics and settings keys the config resolves;
    without one, a host is built from the configuration's ``disable_plugins`` and the
    environment (:func:`host_for`). It is :attr:`host` afterwards.

    A key the user set (files, ``config_dict``) that ``model`` does not read is an error naming
    the models that do (:func:`~recbole_bundlellm.config.keys.check_read_keys`);
    ``check_model_keys=False`` accepts any model's keys (``distill``, which runs no model, reads
    the files that students are run with).
    """

    def __init__(
        self,
        model: str | type,
        dataset: str | None = None,
        config_file_list: Sequence[str | os.PathLike] | None = None,
        config_dict: dict[str, Any] | None = None,
        *,
        host: PluginHost | None = None,
        check_model_keys: bool = True,
    ) -> None:
        files = [str(p) for p in config_file_list or []]
        # Both branches read each file (disable_plugins), so an unreadable one is one error naming it.
        if host is None:
            host = host_for(files, config_dict)
        else:
            check_host(host, files, config_dict)
        self.host: PluginHost | None = host
        self.spec: ModelSpec = host.models.resolve(model) if isinstance(model, str) else _spec_of(model, host)
        self._user_files = files
        self.check_model_keys = check_model_keys
        super().__init__(self.spec.model_class, dataset, files or None, config_dict)

    def __getstate__(self) -> dict[str, Any]:
        # RecBole pickles the config into its checkpoints; the host (modules, hook callers) is
        # live process state, not configuration.
        state = dict(self.__dict__)
        state["host"] = None
        return state

    def with_dataset(self, dataset: str) -> BundleConfig:
        """The same files, overrides and host for another dataset (e.g. another domain)."""
        overrides = {k: v for k, v in self.variable_config_dict.items() if k != "dataset"}
        return BundleConfig(self.spec.name, dataset, self._user_files, overrides, host=self.host,
                            check_model_keys=self.check_model_keys)

    def _load_cmd_line(self) -> dict[str, Any]:
        return {}

    def _init_device(self) -> None:
        """RecBole's, but a distributed run (``local_rank`` set, or filled in from torchrun's
        environment) runs on the CPU with gloo where there is no GPU or ``use_gpu`` is False
        (RecBole's assumes NCCL and CUDA); see :func:`~recbole_bundlellm.training.distributed.init_distributed`."""
        final = self.final_config_dict
        from_torchrun = False
        if "local_rank" not in final:
            launched = torchrun_settings()
            if launched is None:
                super()._init_device()  # one process: RecBole's device choice as is
                return
            final.update(launched)
            from_torchrun = True
        gpu_id = final["gpu_id"]
        final["gpu_id"] = ",".join(map(str, gpu_id)) if isinstance(gpu_id, (tuple, list)) else str(gpu_id)
        # Under torchrun RecBole's default gpu_id '0' would hide every GPU but the first.
        init_distributed(final, gpu_id_given=not from_torchrun or "gpu_id" in self.external_config_dict)

    def _load_internal_config_dict(self, model, model_class, dataset):  # type: ignore[no-untyped-def]
        super()._load_internal_config_dict(model, model_class, dataset)
        overlays: list[Path] = []
        if self.spec.is_bundle_model:
            overlays.append(BUNDLE_OVERALL)
        elif str(dataset).endswith(NEXT_ITEM_SUFFIX):
            overlays.append(NEXT_ITEM_OVERALL)
        overlays.extend(self.spec.config_files)
        for path in overlays:
            self._update_internal_config_dict(str(path))
        default_data = os.environ.get("BUNDLELLM_DATA")
        if default_data:
            self.internal_config_dict["data_path"] = default_data

    def _merge_external_config_dict(self) -> None:
        super()._merge_external_config_dict()
        # Settings blocks of our own (teacher, sampling, each plugin component) merge key by key,
        # so `--teacher='{base_url: ...}'` changes the URL and keeps the file's other settings.
        # RecBole's own dict keys keep RecBole's replace semantics.
        ours = SETTINGS_BLOCKS | self.host.settings_keys()
        for key, value in self.variable_config_dict.items():
            base = self.file_config_dict.get(key)
            if isinstance(value, dict) and isinstance(base, dict) and key in ours:
                self.external_config_dict[key] = {**base, **value}

    def _get_final_config_dict(self) -> dict[str, Any]:
        known = set(self.internal_config_dict) | known_config_keys(self.host)
        given = [(_yaml_keys(Path(path)), f"config file {path}") for path in self._user_files]
        given.append((set(self.variable_config_dict), "the config overrides"))
        for keys, where in given:
            check_keys(keys, known, where, self.host)
        # Only keys the user set count: the defaults (RecBole's dataset and model-type files, ours,
        # the model's own) are the model's run's.
        if self.check_model_keys:
            for keys, where in given:
                check_read_keys(keys, self.spec, self.host, where, also_read=self.internal_config_dict)
        final = super()._get_final_config_dict()
        check_metrics(final, self.host)
        # RecBole's own models may read a key of ours with another meaning (CORE: `temperature`).
        if self.spec.is_bundle_model:
            check_numeric_settings(final)
        check_settings_blocks(final, self.host)
        return final

    def _get_model_and_dataset(self, model, dataset):  # type: ignore[no-untyped-def]
        if dataset is None and self.external_config_dict.get("dataset") is None:
            raise ConfigError("no dataset given (set `dataset:` in a config file or pass --dataset)")
        return super()._get_model_and_dataset(model, dataset)


def _spec_of(model_class: type, host: PluginHost) -> ModelSpec:
    for spec in host.models.specs():
        if spec.target is model_class or spec.model_class is model_class:
            return spec
    return ModelSpec(model_class.__name__, model_class, origin="recbole", is_bundle_model=False)
