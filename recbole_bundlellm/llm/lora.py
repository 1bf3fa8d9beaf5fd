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
from recbole_bundlellm.fileio import atomic_folder, atomic_write_text, sha256_file

ADAPTER_INFO = "bundlellm_adapter.json"
#: The LoRA weights file peft writes into an adapter folder.
ADAPTER_WEIGHTS = "adapter_model.safetensors"
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
    #: 0-based indices of the transformer blocks that get adapters; ``None`` for every block.
    layers: tuple[int, ...] | None = None


def attach_lora(model: Any, settings: LoraSettings, adapter_name: str = "default") -> Any:
    """``model`` wrapped in a peft LoRA model (base frozen, adapter trainable); ``model`` must be
    the caller's own copy: peft changes it in place."""
    from peft import LoraConfig, get_peft_model

    targets = settings.target_modules
    if settings.layers is not None and targets == ALL_LINEAR:
        targets = linear_module_names(model)  # peft takes block indices only with named modules
    config = LoraConfig(
        r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        bias="none", task_type="CAUSAL_LM",
        layers_to_transform=list(settings.layers) if settings.layers is not None else None,
    )
    return get_peft_model(model, config, adapter_name=adapter_name)


def linear_module_names(model: Any) -> tuple[str, ...]:
    """The names (last part) of the linear projections in ``model``, the output head left out:
    what ``all-linear`` means, spelled out."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return tuple(sorted({name.rpartition(".")[2] for name, module in model.named_modules()
                         if isinstance(module, torch.nn.Linear) and module is not head}))


def adapted_layers(top: int | None, last: int) -> tuple[int, ...] | None:
    """The 0-based blocks of ``lora_layers: top``: the ``top`` blocks ending at block ``last``
    (1-based, the block whose output the model reads); ``None`` (every block) for ``top`` ~."""
    if top is None:
        return None
    return tuple(range(max(0, last - top), last))


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
                 info: dict[str, Any] | None = None, extra_files: dict[str, bytes] | None = None) -> Path:
    """Save a peft model's adapter as an ordinary peft folder plus its base and fingerprint
    (and ``extra_files``, name -> bytes: weights trained beside the adapter, e.g. a head).

    Written into a temporary folder and renamed, so a crash never leaves half an adapter where a
    later run would take it for a finished one.
    """
    with atomic_folder(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        record = {"base_model": asdict(base), "fingerprint": fingerprint, **(info or {})}
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        record["weights_sha256"] = weights_hashes(tmp)
        atomic_write_text(tmp / ADAPTER_INFO, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return Path(folder)


def weights_hashes(folder: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of each weights file (``*.safetensors``) of an adapter folder, by file name."""
    return {p.name: sha256_file(p) for p in sorted(Path(folder).glob("*.safetensors"))}


class DamagedAdapter(AdapterError):
    """An adapter whose weights changed after they were written (a flipped byte, a partial copy)."""


def verify_weights(folder: str | os.PathLike, info: dict[str, Any]) -> None:
    """Check an adapter's weights files against the hashes recorded when it was saved (adapters
    saved before hashes were recorded are not checked); :class:`DamagedAdapter` names the file
    and what to do."""
    recorded = info.get("weights_sha256")
    if not recorded:
        return
    for name, expected in recorded.items():
        path = Path(folder) / name
        if not path.is_file():
            raise DamagedAdapter(f"the adapter {folder} has lost its weights file {name}; delete the folder to "
                                 "train again, or point at a complete adapter")
        if sha256_file(path) != expected:
            raise DamagedAdapter(f"the adapter's weights file {path} changed after it was saved (its SHA-256 "
                                 "no longer matches the one recorded beside it); delete the folder to train again")


def check_lora_weights(folder: str | os.PathLike) -> None:
    """Before peft reads a LoRA adapter folder: its weights file exists and its header reads
    (peft would take a folder without weights for a hub repository id)."""
    read_header(Path(folder) / ADAPTER_WEIGHTS)


def read_header(path: Path) -> None:
    """Open a safetensors file's header (cheap); :class:`DamagedAdapter` when it is missing or unreadable."""
    from safetensors import safe_open

    if not path.is_file():
        raise DamagedAdapter(f"{path.parent} holds no {path.name}: it is not a LoRA adapter (a RouteDK run is not an "
                             "expert, a run folder's adapter is its adapter/ folder); point at a BundleSFT run's adapter")
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for a bad header
        raise DamagedAdapter(f"{path} cannot be read ({exc}); delete the adapter folder to train again") from None


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
    verify_weights(folder, info)
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
    check_lora_weights(folder)
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


__all__ = ["ADAPTER_INFO", "ALL_LINEAR", "AdapterError", "BaseModelId", "DamagedAdapter", "LoraSettings", "adapter_info",
           "adapted_layers", "attach_lora", "check_base", "check_lora_weights", "count_parameters", "load_adapter", "load_trainable_state",
           "save_adapter", "target_modules_setting", "trainable_state", "verify_weights", "weights_hashes"]
