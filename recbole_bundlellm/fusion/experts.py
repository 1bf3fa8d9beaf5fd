"""The expert store: the LoRA experts of one base model that a mixture (RouteDK) can combine.

An expert is an ordinary adapter folder written by a BundleSFT run (``<output_dir>/adapter``):
a peft adapter plus ``bundlellm_adapter.json`` (base model, fingerprint, what it was trained on,
its best valid score). The store finds them under a root folder (``outputs/`` by default) and
refuses any trained on another base model: a LoRA delta means nothing on other weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recbole_bundlellm.llm.lora import ADAPTER_INFO, AdapterError, BaseModelId, adapter_info, check_base


@dataclass(frozen=True)
class Expert:
    """One trained adapter usable as an expert: ``kind`` (the name the mixture gives it) and its folder."""

    kind: str
    folder: Path
    info: dict[str, Any] = field(repr=False)

    @property
    def fingerprint(self) -> str:
        return str(self.info.get("fingerprint", ""))

    @property
    def knowledge(self) -> list[str] | None:
        """The knowledge types its training examples used ([]: raw sessions; None: not recorded)."""
        value = self.info.get("knowledge_use")
        return None if value is None else list(value)

    @property
    def valid_score(self) -> float | None:
        return self.info.get("training", {}).get("best_valid_score")

    def summary(self) -> dict[str, Any]:
        """What the run's metrics and the ``bundlellm experts`` listing show of it."""
        training = self.info.get("training", {})
        return {"kind": self.kind, "folder": str(self.folder), "fingerprint": self.fingerprint,
                "knowledge_use": self.knowledge, "adaptation": self.info.get("adaptation"),
                "valid_score": self.valid_score, "train_seconds": training.get("train_seconds"),
                "run_name": self.info.get("run_name")}


def default_kind(info: Mapping[str, Any]) -> str:
    """The kind an adapter's own record suggests: its knowledge types joined (``raw`` for none)."""
    knowledge = info.get("knowledge_use")
    if knowledge is None:
        return "?"
    return "+".join(knowledge) or "raw"


def adapter_folder(location: str | os.PathLike) -> Path:
    """``location`` itself when it is an adapter folder, or the ``adapter/`` of a run's output folder."""
    folder = Path(location)
    if not (folder / ADAPTER_INFO).is_file() and (folder / "adapter" / ADAPTER_INFO).is_file():
        return folder / "adapter"
    return folder


def resolve_expert(kind: str, location: str | os.PathLike, base: BaseModelId) -> Expert:
    """The expert ``kind`` at ``location`` (an adapter folder or a BundleSFT run's output folder),
    checked to be a LoRA adapter trained on ``base``; else :class:`AdapterError` saying what to do."""
    folder = adapter_folder(location)
    if not folder.is_dir() or adapter_info(folder) is None:
        raise AdapterError(f"expert '{kind}': no trained adapter at {location}; train it first with its BundleSFT "
                           f"config (`bundlellm run -c <config>`, whose output_dir holds adapter/), or list the "
                           f"experts there are with `bundlellm experts`")
    info = check_base(folder, base)
    if info.get("full_finetune"):
        raise AdapterError(f"expert '{kind}' at {folder} holds fully fine-tuned weights, not a LoRA adapter; "
                           "a mixture combines LoRA experts only")
    return Expert(kind, folder, info)


class ExpertStore:
    """The experts of base model ``base`` found under ``root`` (every ``adapter/`` a BundleSFT run wrote)."""

    def __init__(self, root: str | os.PathLike, base: BaseModelId) -> None:
        self.root = Path(root)
        self.base = base

    def experts(self) -> list[Expert]:
        """Every LoRA adapter under the root trained on this base, by folder; others are left out
        (:meth:`other_bases` counts them)."""
        found = []
        for folder, info in self._adapters():
            if info.get("base_model", {}).get("content_hash") == self.base.content_hash and not info.get("full_finetune"):
                found.append(Expert(default_kind(info), folder, info))
        return found

    def other_bases(self) -> int:
        """How many adapters under the root were trained on another base model."""
        return sum(info.get("base_model", {}).get("content_hash") != self.base.content_hash
                   for _, info in self._adapters())

    def get(self, kind: str, location: str | os.PathLike) -> Expert:
        """The expert ``kind`` at ``location`` (relative to the working directory, or the root)."""
        path = Path(location)
        if not path.exists() and not path.is_absolute() and (self.root / path).exists():
            path = self.root / path
        return resolve_expert(kind, path, self.base)

    def _adapters(self) -> list[tuple[Path, dict[str, Any]]]:
        out = []
        if not self.root.is_dir():
            return out
        for info_file in sorted(self.root.rglob(ADAPTER_INFO)):
            folder = info_file.parent
            # Training working copies (<run>.training/...) and half-written folders are not experts.
            if any(part.endswith(".training") or part.startswith(".") for part in folder.relative_to(self.root).parts):
                continue
            try:
                info = adapter_info(folder)
            except AdapterError:
                continue
            if info is not None:
                out.append((folder, _with_run_config(folder, info)))
        return out


def run_config(folder: Path) -> dict[str, Any] | None:
    """The configuration (``config.yaml``) of the run whose ``adapter/`` is ``folder``; ``None``
    where there is none, or it cannot be read."""
    path = Path(folder).parent / "config.yaml"
    if not path.is_file():
        return None
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def _with_run_config(folder: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Adapters saved before their record named the knowledge: take it from the run's config.yaml."""
    config = None if "knowledge_use" in info else run_config(folder)
    if config is None:
        return info
    return {**info, "knowledge_use": list(config.get("knowledge_use") or []), "run_name": config.get("run_name"),
            "adaptation": config.get("adaptation")}


__all__ = ["Expert", "ExpertStore", "adapter_folder", "default_kind", "resolve_expert", "run_config"]
