"""Multi-process training under torchrun (issue 9): two CPU processes with gloo, RecBole's own
distributed settings filled from torchrun's environment."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recbole_bundlellm.training.distributed import DistributedError, init_distributed, torchrun_settings

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "ddp_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_settings_fill_recbole_keys():
    env = {"LOCAL_RANK": "1", "RANK": "5", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4",
           "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    assert torchrun_settings(env) == {"local_rank": 1, "nproc": 4, "world_size": 8, "offset": 4,
                                      "ip": "10.0.0.1", "port": 29500}
    assert torchrun_settings({k: v for k, v in env.items() if k != "MASTER_PORT"}) is None
    assert torchrun_settings({}) is None


def test_recbole_settings_missing_a_key_are_named():
    with pytest.raises(DistributedError, match="missing port"):
        init_distributed({"local_rank": 0, "nproc": 1, "world_size": 1, "offset": 0, "ip": "127.0.0.1",
                          "gpu_id": "", "use_gpu": False})


def test_two_processes_train_one_adapter(tiny_data, tiny_llm_path, tmp_path):
    """2-process DDP on the CPU: both ranks end with the same trained tensors, rank 0 alone
    writes the run, and its adapter loads with peft and holds those tensors."""
    runs, report = tmp_path / "runs", tmp_path / "report"
    report.mkdir()
    out = runs / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), str(REPO / "plugins"),
                                                       os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", str(WORKER), str(tiny_data), str(tiny_llm_path), str(out),
               str(report)]
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    ranks = [json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:
        assert (r["backend"], r["world"], r["device"]) == ("gloo", 2, "cpu")
        assert not r["group_left_open"]  # the runner destroys the process group it started
        # Each rank trains on its half of the batches (one session a batch).
        assert r["steps"] == r["examples"] // 2 > 0
    # Rank 0 alone writes the resumable state (checkpoint_steps: 1 writes one every step).
    assert ranks[0]["checkpoint_writes"] and not ranks[1]["checkpoint_writes"]
    assert ranks[0]["trained_sha256"] == ranks[1]["trained_sha256"]  # the gradients were averaged
    assert ranks[0]["sha256"] == ranks[1]["sha256"] == ranks[0]["trained_sha256"]

    # Rank 0 built the run beside `out` and moved it there; rank 1's stage was temporary.
    assert not Path(ranks[1]["stage"]).exists() and Path(ranks[1]["stage"]).parent != runs
    assert sorted(p.name for p in runs.iterdir()) == ["out"]  # no .training, no stage left
    assert (out / "metrics.json").is_file()

    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    trained, initial = load_file(str(report / "rank0.safetensors")), load_file(str(report / "initial.safetensors"))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llm_path), str(out / "adapter"))
    loaded = {name: p.detach() for name, p in model.named_parameters() if "lora_" in name}
    assert set(loaded) == set(trained)
    assert all(torch.equal(loaded[name], trained[name]) for name in trained)
    assert any(not torch.equal(trained[name], initial[name]) for name in trained)  # training moved them
