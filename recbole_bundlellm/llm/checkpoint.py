"""Training checkpoints in safetensors: only what was trained, plus what resuming needs.

One file holds the trainable tensors (``param/<name>``), the optimizer's per-parameter state
(``optim/<index>/<key>``), the torch RNG state (``rng/torch``) and, in the safetensors metadata
(text), the optimizer's param groups and where training stood (epoch, step, best score). No
pickle anywhere: RecBole's own ``_save_checkpoint`` pickles the whole state dict, frozen base
included. The file is written beside its target and renamed over it, so a crash or a full disk
leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from recbole_bundlellm.llm.lora import load_trainable_state, trainable_state
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.fileio import atomic_write_bytes, write_errors

CHECKPOINT_FORMAT = "bundlellm-train-v1"


class CheckpointError(BundleLLMError, RuntimeError):
    """A checkpoint that cannot be written (full disk) or read (damaged, another configuration)."""


@dataclass
class TrainingProgress:
    """Where a training stood when its checkpoint was written.

    ``epoch`` is the epoch in progress and ``step_in_epoch`` the batches of it already done (0
    at an epoch's start); ``global_step`` counts optimizer steps over all epochs.
    """

    fingerprint: str
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_valid_score: float | None = None
    cur_step: int = 0
    epoch_loss: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"optim/{index}/{key}"] = tensor.detach().to("cpu").contiguous()
    return tensors, state["param_groups"]


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    progress: TrainingProgress) -> Path:
    """Write a resumable checkpoint of ``model``'s trainable tensors and ``optimizer`` to ``path``."""
    from safetensors.torch import save

    path = Path(path)
    tensors = {f"param/{name}": t for name, t in trainable_state(model).items()}
    optim_tensors, groups = _optimizer_tensors(optimizer)
    tensors.update(optim_tensors)
    tensors["rng/torch"] = torch.get_rng_state()
    metadata = {"format": CHECKPOINT_FORMAT, "progress": json.dumps(asdict(progress)),
                "param_groups": json.dumps(groups)}
    with write_errors(lambda why: CheckpointError(
            f"could not write the checkpoint {path}: {why}; the previous checkpoint (if any) is kept, free space "
            "and run the same command again to resume from it"), errnos=None):
        atomic_write_bytes(path, save(tensors, metadata=metadata))
    return path


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None) -> TrainingProgress:
    """Restore ``model``'s trainable tensors, ``optimizer`` and the torch RNG from ``path``."""
    from safetensors import safe_open

    path = Path(path)
    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                tensors[key] = f.get_tensor(key)
        if metadata.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"format {metadata.get('format')!r}, expected {CHECKPOINT_FORMAT}")
        progress = TrainingProgress(**json.loads(metadata["progress"]))
        groups = json.loads(metadata["param_groups"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"the checkpoint {path} cannot be read ({exc}); delete it to train from the start") from exc
    load_trainable_state(model, {k.removeprefix("param/"): v for k, v in tensors.items() if k.startswith("param/")})
    if optimizer is not None:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim/"):
                _, index, name = key.split("/", 2)
                state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng/torch"])
    return progress


def read_tensors(path: str | os.PathLike, remedy: str) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors file ``path``; a missing, truncated or corrupt file is a
    :class:`CheckpointError` naming the file and ``remedy`` (what the user should do)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; {remedy}")
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors' own error type for a bad header or size
        raise CheckpointError(f"{path} cannot be read ({exc}); {remedy}") from None


def read_progress(path: str | os.PathLike) -> TrainingProgress:
    """The progress recorded in a checkpoint, without loading its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return TrainingProgress(**json.loads((f.metadata() or {})["progress"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"the checkpoint {path} cannot be read ({exc}); delete it to train from the start") from exc


__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "TrainingProgress", "load_checkpoint", "read_progress",
           "save_checkpoint"]
