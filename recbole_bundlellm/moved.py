"""The old addresses of moved modules, kept working: ``import recbole_bundlellm.hookspecs`` (and
``from recbole_bundlellm.hookspecs import hookimpl``, ``"recbole_bundlellm.trainer:BundleTrainer"``,
...) gives the very module at its new address, with a :class:`DeprecationWarning`.

Installed plugins written against an old address keep loading. New code uses the new addresses
(``tests/test_imports.py`` refuses an old one in the project). See docs/plugins.md, "Where the
modules moved". ``recbole_bundlellm/__init__.py`` installs the finder.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

#: old module -> new module
MOVED: dict[str, str] = {
    "recbole_bundlellm.hookspecs": "recbole_bundlellm.extension.hookspecs",
    "recbole_bundlellm.plugins": "recbole_bundlellm.extension.host",
    "recbole_bundlellm.registry": "recbole_bundlellm.extension.registry",
    "recbole_bundlellm.runner": "recbole_bundlellm.commands.runner",
    "recbole_bundlellm.distill": "recbole_bundlellm.commands.distill",
    "recbole_bundlellm.compare": "recbole_bundlellm.commands.compare",
    "recbole_bundlellm.benchmark": "recbole_bundlellm.commands.benchmark",
    "recbole_bundlellm.benchmark_report": "recbole_bundlellm.commands.benchmark.report",
    "recbole_bundlellm.trainer": "recbole_bundlellm.training.trainer",
    "recbole_bundlellm.neural_trainer": "recbole_bundlellm.training.neural_trainer",
    "recbole_bundlellm.sft_trainer": "recbole_bundlellm.training.sft_trainer",
    "recbole_bundlellm.distributed": "recbole_bundlellm.training.distributed",
    "recbole_bundlellm.frequent_patterns": "recbole_bundlellm.knowledge.frequent_patterns",
    "recbole_bundlellm.adaptation.lora": "recbole_bundlellm.llm.lora",
    "recbole_bundlellm.adaptation.checkpoint": "recbole_bundlellm.llm.checkpoint",
    "recbole_bundlellm.adaptation.batches": "recbole_bundlellm.llm.batches",
    "recbole_bundlellm.models.floor": "recbole_bundlellm.models.floors.floor",
    **{f"recbole_bundlellm.models.{name}": f"recbole_bundlellm.models.baselines.{name}"
       for name in ("freq", "pairwise", "recbole_bundler", "bbpr", "pog", "bgn", "neural")},
    **{f"recbole_bundlellm.models.{name}": f"recbole_bundlellm.models.students.{name}"
       for name in ("bundlellm", "bundle_sft", "route_dk", "teacher_llm")},
}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old address and loads it as the module at the new one (the same object)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        self._specs = getattr(self, "_specs", {})
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system set the module's __spec__ to the old address's: give it back its own.
        module.__spec__ = self._specs.pop(module.__spec__.name, module.__spec__)


def install() -> None:
    """Put the finder first on ``sys.meta_path``, once: an old address is always the new module,
    never a stale file of another install of the package (an editable one of an older tree)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())
