"""Progress off a terminal: a long step under nohup, SLURM or CI writes plain progress lines
(done / total, rate, ETA) at a steady interval instead of a bar's carriage returns or nothing."""

from __future__ import annotations

import io
import subprocess
import sys

from recbole_bundlellm.progress import ProgressLines, progress_bar


def test_progress_lines_say_done_total_rate_and_eta():
    stream = io.StringIO()
    bar = ProgressLines(total=4, desc="SFT epoch 1/2", unit="batch", interval=0.0, stream=stream)
    for _ in range(4):
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("SFT epoch 1/2: 1/4 batch (25%), ") and "batch/s" in lines[0] and "ETA" in lines[0]
    assert lines[-1].startswith("SFT epoch 1/2: 4/4 batch (100%)") and "done in" in lines[-1]
    assert "\r" not in stream.getvalue()


def test_lines_wait_for_the_interval():
    stream = io.StringIO()
    bar = ProgressLines(total=1000, desc="x", interval=3600.0, stream=stream)
    for _ in range(1000):
        bar.update(1)
    bar.close()
    assert stream.getvalue() == ""  # a step shorter than the interval stays quiet


def test_a_log_gets_lines_and_the_environment_still_decides():
    code = ("import time; from recbole_bundlellm.progress import progress_bar\n"
            "bar = progress_bar(total=3, desc='gen', unit='prompt')\n"
            "for _ in range(3):\n    time.sleep(0.01); bar.update(1)\nbar.close()\n")
    env = {"BUNDLELLM_PROGRESS_INTERVAL": "0", "PATH": "/usr/bin:/bin"}
    logged = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert logged.returncode == 0 and "gen: 3/3 prompt (100%)" in logged.stderr and "\r" not in logged.stderr
    silent = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**env, "BUNDLELLM_PROGRESS": "0"})
    assert silent.returncode == 0 and silent.stderr == ""
    assert progress_bar(total=1, enabled=False).disable  # a caller's "no" stays silent
