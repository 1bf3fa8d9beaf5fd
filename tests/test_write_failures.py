"""A write the filesystem refuses (disk full, file too large, read-only) is one line and loses nothing.

Each test lets a first command finish, then makes the low-level write of the second one fail with
an ``OSError`` of the errno a real disk gives, and checks the CLI's one line (exit 2) and that the
folder still holds what the first command wrote, with nothing left beside it.
"""

from __future__ import annotations

import errno
import importlib
import io
import os
from pathlib import Path

import pytest

from conftest import FIXTURES
from recbole_bundlellm.commands.cli import main
from recbole_bundlellm.fileio import os_error_reason, write_errors

REFUSED = [errno.ENOSPC, errno.EFBIG, errno.EROFS]
REASONS = {errno.ENOSPC: "no space left on device", errno.EFBIG: "file too large",
           errno.EROFS: "read-only file system"}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refusing_open(module, monkeypatch, code: int, name: str) -> None:
    """``open`` in ``module`` gives files whose writes fail with ``code`` for a path named ``name``."""
    real = open

    class Refusing(io.TextIOWrapper):
        def write(self, text: str) -> int:
            raise OSError(code, os.strerror(code))

    def opener(path, mode="r", *args, **kwargs):
        if Path(path).name == name and "w" in mode:
            return Refusing(real(path, "wb"), encoding="utf-8", newline=kwargs.get("newline"))
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(module, "open", opener, raising=False)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_the_reasons_of_a_refused_write():
    for code, why in REASONS.items():
        assert os_error_reason(OSError(code, os.strerror(code))) == why


def test_write_errors_turns_only_a_refused_write_into_the_users_error():
    class Mine(Exception):
        pass

    with pytest.raises(Mine, match="no space left"):
        with write_errors(lambda why: Mine(why)):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(FileNotFoundError):  # not the filesystem refusing a write: a bug, kept
        with write_errors(lambda why: Mine(why)):
            raise FileNotFoundError(errno.ENOENT, "gone")


@pytest.mark.parametrize("code", REFUSED)
def test_a_run_whose_outputs_cannot_be_written_keeps_the_previous_run(tiny_data, tmp_path, capsys, monkeypatch,
                                                                      code):
    runner = importlib.import_module("recbole_bundlellm.commands.runner")
    out = tmp_path / "runs" / "floor"
    argv = ["run", "--model=Floor", "--dataset=clothing", f"--data_path={tiny_data}", "--output-dir", str(out)]
    assert main(argv) == 0
    before = _snapshot(out)
    capsys.readouterr()
    _refusing_open(runner, monkeypatch, code, "predictions.jsonl")
    assert main([*argv, "--floor_rule=first_two"]) == 2
    line = _one_error_line(capsys)
    assert REASONS[code] in line and str(out) in line and "kept" in line
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["floor"]  # no partial or old folder left


@pytest.mark.parametrize("code", REFUSED)
def test_data_prepare_whose_tables_cannot_be_written_keeps_the_previous_output(tmp_path, capsys, monkeypatch,
                                                                               code):
    atomic = importlib.import_module("recbole_bundlellm.data.atomic")
    out = tmp_path / "prepared"
    argv = ["data", "prepare", f"--raw={FIXTURES / 'tiny_raw'}", f"--out={out}", "--domain=clothing"]
    assert main(argv) == 0
    before = _snapshot(out)
    capsys.readouterr()
    _refusing_open(atomic, monkeypatch, code, "clothing.item")
    assert main([*argv, "--force", "--seed=7"]) == 2
    line = _one_error_line(capsys)
    assert REASONS[code] in line and str(out) in line and "kept" in line
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".lock")) == ["clothing", "clothing_next"]


def test_a_run_whose_log_cannot_be_written_stops_with_one_line(tiny_data, tmp_path, capsys, monkeypatch):
    # logging's own handling prints a traceback per record and lets the run go on without its log.
    import logging

    out = tmp_path / "runs" / "floor"
    argv = ["run", "--model=Floor", "--dataset=clothing", f"--data_path={tiny_data}", "--output-dir", str(out)]
    assert main(argv) == 0
    before = _snapshot(out)
    capsys.readouterr()
    _refusing_open(logging, monkeypatch, errno.ENOSPC, "run.log")
    assert main([*argv, "--floor_rule=first_two"]) == 2
    line = _one_error_line(capsys)
    assert "no space left on device" in line and "kept" in line
    assert _snapshot(out) == before
