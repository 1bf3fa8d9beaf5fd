"""check_prepared: a clear error before RecBole meets a missing prepared dataset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recbole_bundlellm.data import DataError, PreparedDataMissing, check_prepared
from recbole_bundlellm.data.prepared import needed_files

REPO = Path(__file__).resolve().parents[1]


def config(data_path: Path, dataset: str = "clothing", benchmark=("train", "valid", "test")) -> dict:
    return {"data_path": str(data_path), "dataset": dataset, "benchmark_filename": list(benchmark)}


def test_missing_split_file_is_named(tmp_path):
    folder = tmp_path / "clothing"
    folder.mkdir()
    (folder / "clothing.train.inter").write_text("x\n")
    with pytest.raises(PreparedDataMissing, match=r"clothing\.valid\.inter is missing") as info:
        check_prepared(config(folder))
    message = str(info.value)
    assert "bundlellm data prepare" in message and f"--out {tmp_path}" in message
    # Still caught by whoever caught FileNotFoundError before, and a DataError of this package.
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, DataError)


def test_complete_dataset_passes(tmp_path):
    folder = tmp_path / "clothing"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        (folder / f"clothing.{split}.inter").write_text("x\n")
    check_prepared(config(folder))


def test_single_inter_file_without_benchmark(tmp_path):
    folder = tmp_path / "clothing_next"
    folder.mkdir()
    assert needed_files(folder, "clothing_next", None) == [folder / "clothing_next.inter"]
    with pytest.raises(PreparedDataMissing, match=r"clothing_next\.inter is missing"):
        check_prepared(config(folder, "clothing_next", benchmark=()))
    (folder / "clothing_next.inter").write_text("x\n")
    check_prepared(config(folder, "clothing_next", benchmark=()))


def test_data_package_stays_at_the_bottom_of_the_import_graph():
    code = (
        "import sys, recbole_bundlellm.data\n"
        "bad = sorted(m for m in sys.modules if m.startswith('recbole_bundlellm.') and\n"
        "             not m.startswith('recbole_bundlellm.data') and\n"
        "             m not in ('recbole_bundlellm.compat', 'recbole_bundlellm.moved', 'recbole_bundlellm.fileio', 'recbole_bundlellm.errors'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "[]"
