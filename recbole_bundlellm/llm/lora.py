"""LoRA adapters on a causal LM: attach, save as ordinary peft adapters, load only onto their base.

An adapter folder is what ``PeftModel.save_pretrained`` writes (``adapter_config.json`` and
``adapter_model.safetensors``, so ``PeftModel.from_pretrained`` loads it) plus
``bundlellm_adapter.json``: the base model it was trained on (path and content hash) and the
fingerprint of its training (data, knowledge, settings). Loading it onto another base is refused:
the numbers would load without error and silently mean nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.fileio import atomic_folder, atomic_write_text

ADAPTER_INFO = "bundlellm_adapter.json"
#: ``target_modules: all-linear`` in peft: every linear layer but the output head.
ALL_LINEAR = "all-linear"


class AdapterError(BundleLLMError, ValueError):
    """An adapter that cannot be used here (another base model, a damaged folder)."""


@dataclass(frozen=True)
class BaseModelId:
    """The base model an adapter belongs to: where it was and what it held (content hash)."""

    path: str
    content_hash: str


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters (the ``lora_*`` keys of a fine-tuned model's YAML)."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | tuple[str, ...] = ALL_LINEAR


def attach_lora(model: Any, settings: LoraSettings, adapter_name: str = "default") -> Any:
    """``model`` wrapped in a peft LoRA model (base frozen, adapter trainable); ``model`` must be
    the caller's own copy: peft changes it in place."""
    from peft import LoraConfig, get_peft_model

    targets = settings.target_modules
    config = LoraConfig(
        r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        bias="none", task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config, adapter_name=adapter_name)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trained tensors of ``model`` by name (those with ``requires_grad``), detached on the CPU."""
    return {name: p.detach().to("cpu").contiguous() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy ``tensors`` into ``model``'s trainable parameters; names and shapes must match exactly."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing, unknown = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or unknown:
        raise AdapterError(f"the saved tensors do not match the model's trainable ones "
                           f"(missing {missing[:3]}, unexpected {unknown[:3]}); it was saved by another configuration")
    with torch.no_grad():
        for name, param in params.items():
            if tuple(tensors[name].shape) != tuple(param.shape):
                raise AdapterError(f"saved tensor {name} has shape {tuple(tensors[name].shape)}, the model "
                                   f"expects {tuple(param.shape)}; it was saved by another configuration")
            param.copy_(tensors[name].to(param.device, param.dtype))


def save_adapter(model: Any, folder: str | os.PathLike, base: BaseModelId, fingerprint: str,
                 info: dict[str, Any] | None = None) -> Path:
    """Save a peft model's adapter as an ordinary peft folder plus its base and fingerprint.

    Written into a temporary folder and renamed, so a crash never leaves half an adapter where a
    later run would take it for a finished one.
    """
    with atomic_folder(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        record = {"base_model": asdict(base), "fingerprint": fingerprint, **(info or {})}
        atomic_write_text(tmp / ADAPTER_INFO, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return Path(folder)


def adapter_info(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The ``bundlellm_adapter.json`` of an adapter folder, or ``None`` when there is none."""
    path = Path(folder) / ADAPTER_INFO
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{path} is damaged ({exc}); delete the adapter folder {folder} to train again") from exc


def check_base(folder: str | os.PathLike, base: BaseModelId) -> dict[str, Any]:
    """The adapter's info, after checking it was trained on ``base`` (same content hash)."""
    info = adapter_info(folder)
    if info is None:
        raise AdapterError(f"{folder} is not an adapter of this project (no {ADAPTER_INFO}); "
                           "give a folder written by a BundleSFT run")
    trained_on = info.get("base_model", {})
    if trained_on.get("content_hash") != base.content_hash:
        raise AdapterError(
            f"the adapter {folder} was trained on the base model {trained_on.get('path')!r} "
            f"(content {str(trained_on.get('content_hash'))[:12]}), not on {base.path!r} "
            f"(content {base.content_hash[:12]}); use the base it was trained on (llm_model) or train a new one")
    return info


def load_adapter(model: Any, folder: str | os.PathLike, base: BaseModelId, adapter_name: str = "default") -> Any:
    """Load a saved adapter onto ``model`` (the caller's own copy of ``base``) with peft."""
    from peft import PeftModel

    check_base(folder, base)
    return PeftModel.from_pretrained(model, str(folder), adapter_name=adapter_name, is_trainable=False)


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """``{"trainable": n, "total": m}`` parameters of ``model``."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return {"trainable": trainable, "total": total}


def target_modules_setting(value: str | Sequence[str] | None) -> str | tuple[str, ...]:
    """``lora_target_modules`` from YAML: ``all-linear`` / ``~`` (every linear projection) or a list."""
    if value is None or value == ALL_LINEAR:
        return ALL_LINEAR
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


__all__ = ["ADAPTER_INFO", "ALL_LINEAR", "AdapterError", "BaseModelId", "LoraSettings", "adapter_info",
           "attach_lora", "check_base", "count_parameters", "load_adapter", "load_trainable_state",
           "save_adapter", "target_modules_setting", "trainable_state"]
