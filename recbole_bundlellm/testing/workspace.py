"""A workspace for end-to-end plugin tests: the tiny data prepared in a folder, one plugin host,
and ``distill`` / ``run`` that use both (and a scripted teacher)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from recbole_bundlellm.extension.host import PluginHost
from recbole_bundlellm.testing.data import TINY_DOMAIN, prepare_tiny_data, tiny_sessions
from recbole_bundlellm.testing.host import PluginArg, plugin_host


class Workspace:
    """The tiny dataset, a knowledge store folder and a plugin host under ``root``.

    ``plugins``, ``builtins``, ``installed``, ``disabled`` and ``strict`` build the host as
    :func:`~recbole_bundlellm.testing.plugin_host` does (or pass ``host``). ``data_path``: an
    already prepared tiny dataset to use instead of preparing one under ``root``.
    """

    def __init__(self, root: str | os.PathLike, *plugins: PluginArg, builtins: bool = True,
                 installed: bool = False, disabled: Iterable[str] = (), strict: bool = True,
                 host: PluginHost | None = None, data_path: str | os.PathLike | None = None) -> None:
        self.root = Path(root)
        self.data_path = Path(data_path) if data_path is not None else prepare_tiny_data(self.root / "data")
        self.knowledge_dir = self.root / "knowledge"
        self.host = host if host is not None else plugin_host(*plugins, builtins=builtins, installed=installed,
                                                              disabled=disabled, strict=strict)
        self._runs = itertools.count(1)

    def config(self, **overrides: Any) -> dict[str, Any]:
        """The config keys that point a run at this workspace (dataset, data, store), and ``overrides``."""
        return {"dataset": TINY_DOMAIN, "data_path": str(self.data_path), "knowledge_dir": str(self.knowledge_dir),
                **overrides}

    def sessions(self) -> list[Any]:
        """The training sessions (with bundles and intents), as extractors and samplers get them."""
        return tiny_sessions(self.data_path, host=self.host)

    def records(self, kind: str, *, status: str | None = None) -> list[Any]:
        """The knowledge records of ``kind`` stored in this workspace (``status``: ``"ok"`` or ``"failed"``)."""
        from recbole_bundlellm.knowledge.store import KnowledgeStore

        if not self.knowledge_dir.is_dir():
            return []
        return KnowledgeStore(self.knowledge_dir).records(kind, TINY_DOMAIN, status=status)

    def distill(self, config_files: Sequence[str | os.PathLike] = (), *, teacher: Any = None,
                **overrides: Any) -> Any:
        """:func:`recbole_bundlellm.commands.distill.distill` on the tiny data with this host; returns its summary.

        ``teacher``: a :class:`~recbole_bundlellm.testing.FakeTeacherServer` (started), or a
        ``teacher:`` settings mapping. ``overrides``: config keys (``knowledge_types=[...]``, ...).
        A :class:`~recbole_bundlellm.testing.ScriptedTeacher` is refused: distill talks to its
        teacher over HTTP, so serve the same script with ``FakeTeacherServer(script)``.
        """
        from collections.abc import Mapping

        from recbole_bundlellm.commands.distill import distill
        from recbole_bundlellm.testing.teacher import FakeTeacherServer

        config = self.config(**overrides)
        if teacher is not None:
            if isinstance(teacher, FakeTeacherServer):
                block = teacher.config()
            elif isinstance(teacher, Mapping):
                block = dict(teacher)
            else:
                raise TypeError(f"Workspace.distill(teacher=...) takes a started FakeTeacherServer or a `teacher:` "
                                f"settings mapping, not a {type(teacher).__name__}; distill talks to its teacher over "
                                "HTTP: serve a script with `with FakeTeacherServer(script) as server: "
                                "ws.distill(..., teacher=server)` (a ScriptedTeacher is for calling an extractor's "
                                "extract_session directly)")
            config["teacher"] = block  # change a setting with teacher=server.config(concurrency=2, ...)
        return distill(config_files, config, progress=False, host=self.host)

    def run(self, model: str, config_files: Sequence[str | os.PathLike] = (), *,
            output_dir: str | os.PathLike | None = None, **overrides: Any) -> Any:
        """:func:`recbole_bundlellm.commands.runner.run` of ``model`` on the tiny data with this host;
        returns its :class:`~recbole_bundlellm.evaluation.results.RunResult` (outputs under
        ``root/runs/`` unless ``output_dir``)."""
        from recbole_bundlellm.commands.runner import run

        out = output_dir or self.root / "runs" / f"{next(self._runs)}-{model}"
        return run(model, TINY_DOMAIN, config_files, self.config(**overrides), output_dir=out, host=self.host)

    def close(self) -> None:
        """Release the host's metrics in RecBole."""
        self.host.close()

    def __enter__(self) -> Workspace:  # noqa: PYI034 - Self needs Python 3.11
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = ["Workspace"]
