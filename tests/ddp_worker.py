"""One process of the torchrun launched by tests/test_ddp.py (not a test module itself).

``python ddp_worker.py DATA LLM OUT REPORT``: runs BundleSFT on the tiny data through
``runner.run`` (a few optimizer steps on the CPU) and writes ``REPORT/rank<R>.json``: the sha256
of its trained tensors (sorted by name) as the last epoch left them and at the end, its
optimizer steps, its stage folder, the process group's backend. Rank 0 also writes its final and
initial trained tensors as safetensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from recbole_bundlellm.training import sft_trainer
from recbole_bundlellm.commands.runner import run


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """One hash over the tensors' names, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def main(data: str, llm: str, out: str, report: str) -> None:
    seen: dict[str, Any] = {}
    fit, train_epoch = sft_trainer.SFTTrainer.fit, sft_trainer.SFTTrainer._train_epoch

    def recording_fit(self: sft_trainer.SFTTrainer, *args: Any, **kwargs: Any) -> Any:
        # The runner builds the trainer inside run(): keep it, and what it started from.
        seen.update(trainer=self, initial={k: v.clone() for k, v in self.model.trained_state().items()},
                    backend=torch.distributed.get_backend(), world=torch.distributed.get_world_size())
        return fit(self, *args, **kwargs)

    def recording_train_epoch(self: sft_trainer.SFTTrainer, *args: Any, **kwargs: Any) -> Any:
        # As the epoch's own steps left the weights: fit() then loads rank 0's best-epoch file on
        # every rank, which would make the ranks agree even if their gradients were not averaged.
        loss = train_epoch(self, *args, **kwargs)
        seen["trained_sha256"] = state_sha256(self.model.trained_state())
        return loss

    writes: list[str] = []

    def recording(write: Any) -> Any:
        def recorded(path: Any, *args: Any, **kwargs: Any) -> Any:
            writes.append(str(path))
            return write(path, *args, **kwargs)
        return recorded

    # What the trainer writes to <out>.training (resumable and best-epoch checkpoints).
    sft_trainer.save_checkpoint = recording(sft_trainer.save_checkpoint)
    sft_trainer.atomic_write_bytes = recording(sft_trainer.atomic_write_bytes)
    sft_trainer.SFTTrainer.fit = recording_fit
    sft_trainer.SFTTrainer._train_epoch = recording_train_epoch
    run("BundleSFT", "clothing", config_dict={
        "data_path": data, "llm_model": llm, "epochs": 1, "train_batch_size": 1, "eval_step": 0,
        "adaptation": None, "max_new_tokens": 4, "use_gpu": False, "checkpoint_steps": 1,
    }, output_dir=out)
    trainer = seen["trainer"]
    state = trainer.model.trained_state()
    rank = int(os.environ["RANK"])
    record = {
        "rank": rank, "sha256": state_sha256(state), "trained_sha256": seen["trained_sha256"],
        "steps": trainer.global_step, "examples": len(trainer.examples), "stage": str(trainer.run_folders.stage),
        "backend": seen["backend"], "world": seen["world"], "device": str(trainer.device),
        "group_left_open": torch.distributed.is_initialized(), "checkpoint_writes": writes,
    }
    if rank == 0:
        save_file(state, str(Path(report) / "rank0.safetensors"))
        save_file(seen["initial"], str(Path(report) / "initial.safetensors"))
    (Path(report) / f"rank{rank}.json").write_text(json.dumps(record), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:5])
