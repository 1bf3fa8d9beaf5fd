"""What one cell's job asks a cluster for: the ``resources:`` of a benchmark file, at grid level
and per method (the method's keys win, key by key)::

    resources: {cpus: 4, mem_gb: 16, timeout_min: 60}          # every cell
    methods:
      - {name: SFT, config: configs/{dataset}/sft.yaml,
         resources: {gpus: 1, timeout_min: 240, partition: gpu, slurm: {qos: high}}}

Only ``--executor submitit`` reads them (:func:`submitit_parameters`, one job per cell);
``--executor local`` runs the cells one after the other on this machine and ignores them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from recbole_bundlellm.lookup import did_you_mean
from recbole_bundlellm.settings import ranged

#: The YAML key, at grid level and in a method's mapping.
RESOURCES_KEY = "resources"
#: SLURM settings that a field of :class:`Resources` already says (one way to say each).
_SAID_BY_FIELDS = {"cpus_per_task": "cpus", "gpus_per_node": "gpus", "num_gpus": "gpus", "mem": "mem_gb",
                   "time": "timeout_min", "partition": "partition", "nodes": None, "ntasks_per_node": None,
                   "job_name": None}


@dataclass(frozen=True)
class Resources:
    """One cell's job: one task on one node."""

    gpus: int = ranged(0, min=0)
    cpus: int = ranged(1, min=1)
    mem_gb: float | None = ranged(None, above=0, none_means="the cluster's default")
    # submitit's own default is 2 minutes on its local executor: a cell needs a real limit.
    timeout_min: int = ranged(60, min=1)
    partition: str | None = None
    #: Other ``sbatch`` settings, passed to submitit as ``slurm_<key>`` (account, qos, constraint, ...).
    slurm: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """The ``slurm:`` keys must be submitit's SLURM parameters not said by a field above."""
        for key in self.slurm:
            if key in _SAID_BY_FIELDS:
                said = _SAID_BY_FIELDS[key]
                raise ValueError(f"slurm.{key}: " + (f"give `{said}:` instead" if said else
                                                     "each cell is one task on one node"))
        known = _slurm_parameters()
        if known is None:  # submitit not installed: --executor submitit says so before submitting
            return
        for key in self.slurm:
            if key not in known:
                raise ValueError(f"slurm.{key} is not a SLURM setting of submitit{did_you_mean(key, known)}")

    def describe(self) -> str:
        """A compact line for ``--plan``: ``gpus=1 cpus=8 mem_gb=32 timeout_min=240 partition=gpu``."""
        parts = [f"gpus={self.gpus}", f"cpus={self.cpus}"]
        if self.mem_gb is not None:
            parts.append(f"mem_gb={self.mem_gb:g}")
        parts.append(f"timeout_min={self.timeout_min}")
        if self.partition:
            parts.append(f"partition={self.partition}")
        parts += [f"slurm.{k}={v}" for k, v in sorted(self.slurm.items())]
        return " ".join(parts)


def _slurm_parameters() -> set[str] | None:
    try:
        from submitit import SlurmExecutor
    except ImportError:
        return None
    return set(SlurmExecutor._valid_parameters()) - set(_SAID_BY_FIELDS)


def merged(grid: Mapping[str, Any] | None, method: Mapping[str, Any] | None) -> dict[str, Any]:
    """The method's ``resources:`` over the grid's, key by key (``slurm:`` too)."""
    out = dict(grid or {})
    for key, value in (method or {}).items():
        if key == "slurm" and isinstance(value, Mapping) and isinstance(out.get("slurm"), Mapping):
            value = {**out["slurm"], **value}
        out[key] = value
    return out


def submitit_parameters(resources: Resources) -> dict[str, Any]:
    """The arguments of ``submitit.AutoExecutor.update_parameters`` for one cell's job."""
    params: dict[str, Any] = {"nodes": 1, "tasks_per_node": 1, "cpus_per_task": resources.cpus,
                              "gpus_per_node": resources.gpus, "timeout_min": resources.timeout_min}
    if resources.mem_gb is not None:
        params["mem_gb"] = resources.mem_gb
    if resources.partition:
        params["slurm_partition"] = resources.partition
    params.update({f"slurm_{k}": v for k, v in resources.slurm.items()})
    return params


__all__ = ["RESOURCES_KEY", "Resources", "merged", "submitit_parameters"]
