"""Several processes (``torchrun``) in RecBole's own distributed settings.

RecBole describes a process of a distributed run with the config keys ``local_rank``, ``nproc``,
``world_size``, ``offset`` (the global rank of this node's first process), ``ip`` and ``port``,
and starts the process group itself with NCCL on ``cuda:local_rank``. Here the same keys are
filled from torchrun's environment when the configuration leaves them out, and the process group
uses gloo on the CPU (NCCL needs GPUs), so a multi-process run works, and is tested, without one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import Any

from recbole_bundlellm.errors import BundleLLMError

#: What torchrun sets in each worker's environment.
TORCHRUN_VARIABLES = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
#: RecBole's keys for a distributed run (read by its Config, trainers and data loaders).
RECBOLE_KEYS = ("local_rank", "nproc", "world_size", "offset", "ip", "port")


class DistributedError(BundleLLMError, ValueError):
    """Distributed settings that cannot start a process group (missing keys, too few GPUs)."""


def torchrun_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """RecBole's distributed keys from torchrun's environment; ``None`` outside torchrun."""
    env = os.environ if environ is None else environ
    if not all(env.get(name) for name in TORCHRUN_VARIABLES):
        return None
    local_rank, rank, world = int(env["LOCAL_RANK"]), int(env["RANK"]), int(env["WORLD_SIZE"])
    return {
        "local_rank": local_rank,
        # Processes on this node (LOCAL_WORLD_SIZE is set by torchrun; a launcher without it runs one node).
        "nproc": int(env.get("LOCAL_WORLD_SIZE") or world),
        "world_size": world,
        "offset": rank - local_rank,
        "ip": env["MASTER_ADDR"],
        "port": int(env["MASTER_PORT"]),
    }


def launched_rank() -> int:
    """This process's global rank: the process group's, else torchrun's ``RANK``, else 0.

    Still right after the process group is destroyed (e.g. to print a run's results once).
    """
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK") or 0) if torchrun_settings() is not None else 0


def init_distributed(values: MutableMapping[str, Any], *, gpu_id_given: bool = True) -> bool:
    """RecBole's ``Config._init_device`` for a distributed run, with a CPU backend.

    ``values``: the final config dict, holding :data:`RECBOLE_KEYS` and a normalised ``gpu_id``.
    On CUDA (``use_gpu`` and a GPU present) the group uses NCCL and the process ``cuda:local_rank``,
    as RecBole's; otherwise gloo and the CPU. ``gpu_id_given``: whether the user chose ``gpu_id``
    (exported as ``CUDA_VISIBLE_DEVICES`` as RecBole does); without it the devices torchrun's
    environment shows are used as they are. Returns whether this call started the process group
    (an already started one is kept). Sets ``device`` and ``single_spec`` and, on a process whose
    ``local_rank`` is not 0, RecBole's quiet settings (``state: error``, no progress bars).
    """
    import torch

    missing = [key for key in RECBOLE_KEYS if values.get(key) is None]
    if missing:
        raise DistributedError(f"a distributed run (local_rank is set) needs {', '.join(RECBOLE_KEYS)}; "
                               f"missing {', '.join(missing)} (or leave them all out and start with torchrun)")
    local_rank, nproc = int(values["local_rank"]), int(values["nproc"])
    gpu_id = str(values["gpu_id"])
    if gpu_id_given:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id
    cuda = bool(values.get("use_gpu", True)) and gpu_id != "" and torch.cuda.is_available()
    if cuda:
        visible = len(gpu_id.split(",")) if gpu_id_given else torch.cuda.device_count()
        if visible < nproc:
            shown = f"gpu_id '{gpu_id}' names {visible}" if gpu_id_given else f"{visible} are visible"
            raise DistributedError(f"{nproc} processes on this node need {nproc} GPUs, but {shown}; set gpu_id "
                                   "(e.g. --gpu_id='0,1,2,3') or use_gpu: False for the CPU")
        torch.cuda.set_device(local_rank)
        backend, device = "nccl", torch.device("cuda", local_rank)
        if not gpu_id_given:  # record the devices this run used, not RecBole's default '0'
            values["gpu_id"] = os.environ.get("CUDA_VISIBLE_DEVICES") or ",".join(map(str, range(nproc)))
    else:
        backend, device = "gloo", torch.device("cpu")
    started = False
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            backend=backend, rank=local_rank + int(values["offset"]), world_size=int(values["world_size"]),
            init_method=f"tcp://{values['ip']}:{values['port']}")
        started = True
    values["device"] = device
    values["single_spec"] = False
    if local_rank != 0:
        values["state"] = "error"
        values["show_progress"] = False
        values["verbose"] = False
    return started


def barrier() -> None:
    """Wait for every process of the group (nothing to wait for without one)."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()


__all__ = ["RECBOLE_KEYS", "TORCHRUN_VARIABLES", "DistributedError", "barrier", "init_distributed",
           "launched_rank", "torchrun_settings"]
