"""benchmarks/gpu_check.sh, the check prepared for a lent GPU, stops at once without CUDA: one
error line, exit 2, nothing run or written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run")
def test_gpu_check_fails_fast_without_cuda(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHON": sys.executable, "OUT": str(out),
                                            "CUDA_VISIBLE_DEVICES": ""})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and "needs a CUDA GPU" in lines[0]
    assert not out.exists() and not done.stdout
