"""Preparing never deletes what it did not write: not the raw data, not a user's own files,
and two processes preparing the same output never break each other's folder swap."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recbole_bundlellm.commands import cli
from recbole_bundlellm.data import DataError, prepare, prepare_domain

REPO = Path(__file__).resolve().parents[1]
TINY = Path(__file__).resolve().parent / "fixtures" / "tiny_raw"


def copy_tiny(dest: Path) -> Path:
    """A writable copy of the tiny raw root (domain ``clothing``) at ``dest``."""
    shutil.copytree(TINY, dest)
    return dest


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> content), to prove nothing changed."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- raw vs output folder


def test_cli_out_equal_to_raw_is_refused_and_raw_kept(tmp_path, capsys):
    raw = copy_tiny(tmp_path / "raw")
    before = snapshot(raw)
    code = cli.main(["data", "prepare", "--raw", str(raw), "--out", str(raw), "--domain", "clothing"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "is the raw data folder" in err and str(raw) in err
    assert snapshot(raw) == before


def test_cli_out_that_is_a_file_is_one_line_and_the_file_kept(tmp_path, capsys):
    raw = copy_tiny(tmp_path / "raw")
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    code = cli.main(["data", "prepare", "--raw", str(raw), "--out", str(out), "--domain", "clothing"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert f"output folder {out} is a file, not a folder" in err
    assert out.read_text() == "mine"


@pytest.mark.parametrize("layout", ["inside", "contains", "symlink"])
def test_out_overlapping_raw_is_refused(tmp_path, layout):
    if layout == "contains":
        # Raw root named like the domain: out/clothing *is* the raw root, and was swapped away.
        raw, out = copy_tiny(tmp_path / "clothing"), tmp_path
        expected = "contains the raw data folder"
    elif layout == "inside":
        raw = copy_tiny(tmp_path / "raw")
        out = raw / "clothing" / "prepared"
        expected = "lies inside the raw data folder"
    else:
        raw = copy_tiny(tmp_path / "raw")
        out = tmp_path / "link"
        out.symlink_to(raw)
        expected = "is the raw data folder"
    before = snapshot(raw)
    with pytest.raises(DataError, match=expected) as info:
        prepare(raw, out, ["clothing"], seed=0)
    assert str(raw) in str(info.value) and str(out) in str(info.value)
    assert snapshot(raw) == before


def test_out_beside_raw_is_fine(tmp_path):
    raw = copy_tiny(tmp_path / "data" / "raw")
    prepare_domain(raw, tmp_path / "data" / "raw_prepared", "clothing", seed=0)  # a sibling, not inside
    assert (tmp_path / "data" / "raw_prepared" / "clothing" / "manifest.json").is_file()


# --------------------------------------------------------------------------- foreign files


def test_user_file_in_output_folder_is_named_and_kept(tmp_path):
    out = tmp_path / "out"
    card = prepare_domain(TINY, out, "clothing", seed=0)
    note = out / "clothing" / "notes.md"
    note.write_text("my notes")
    (out / "clothing_next" / "scratch").mkdir()
    # Up to date: nothing is written, so nothing needs refusing.
    assert prepare_domain(TINY, out, "clothing", seed=0) == card
    with pytest.raises(DataError, match=r"notes\.md") as info:
        prepare_domain(TINY, out, "clothing", seed=0, force=True)
    assert "scratch" in str(info.value) and "not written by" in str(info.value)
    assert note.read_text() == "my notes" and (out / "clothing_next" / "scratch").is_dir()
    assert json.loads((out / "clothing" / "dataset_card.json").read_text()) == card
    note.unlink()
    (out / "clothing_next" / "scratch").rmdir()
    assert prepare_domain(TINY, out, "clothing", seed=0, force=True) == card


def _users_own_dataset(out: Path) -> Path:
    """A folder named like the domain holding a user's own files (no manifest from prepare)."""
    (out / "clothing").mkdir(parents=True)
    (out / "clothing" / "clothing.item").write_text("my own item table\n")
    return out / "clothing" / "clothing.item"


def _foreign_manifest(out: Path) -> Path:
    """A manifest.json that prepare did not write (another tool's)."""
    (out / "clothing").mkdir(parents=True)
    (out / "clothing" / "manifest.json").write_text('{"tool": "something else"}\n')
    return out / "clothing" / "manifest.json"


def _file_named_like_next_folder(out: Path) -> Path:
    out.mkdir()
    (out / "clothing_next").write_text("a file, not a folder\n")
    return out / "clothing_next"


def _next_folder_without_card(out: Path) -> Path:
    (out / "clothing_next").mkdir(parents=True)
    (out / "clothing_next" / "clothing_next.inter").write_text("hand made\n")
    return out / "clothing_next" / "clothing_next.inter"


@pytest.mark.parametrize(
    "make", [_users_own_dataset, _foreign_manifest, _file_named_like_next_folder, _next_folder_without_card]
)
def test_folder_prepare_did_not_write_is_refused(tmp_path, make):
    out = tmp_path / "out"
    victim = make(out)
    before, names = snapshot(out), sorted(p.name for p in out.iterdir())
    with pytest.raises(DataError, match="not written by `bundlellm data prepare`") as info:
        prepare_domain(TINY, out, "clothing", seed=0)
    assert str(victim.relative_to(out)) in str(info.value)
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == names


def test_empty_folder_and_older_output_are_replaced(tmp_path):
    out = tmp_path / "out"
    (out / "clothing").mkdir(parents=True)  # empty: holds nothing anyone could lose
    card = prepare_domain(TINY, out, "clothing", seed=0)
    manifest = out / "clothing" / "manifest.json"
    older = json.loads(manifest.read_text())
    older["code_version"] = "recbole_bundlellm 0.1.0 / prepare format 2"
    manifest.write_text(json.dumps(older))
    assert prepare_domain(TINY, out, "clothing", seed=0) == card  # out of date -> re-prepared
    assert json.loads(manifest.read_text())["code_version"] != older["code_version"]


def test_symlinked_output_folder_is_refused(tmp_path):
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    prepare_domain(TINY, elsewhere, "clothing", seed=0)
    out.mkdir()
    (out / "clothing").symlink_to(elsewhere / "clothing")
    with pytest.raises(DataError, match="symbolic link"):
        prepare_domain(TINY, out, "clothing", seed=0, force=True)
    assert (out / "clothing").is_symlink() and (elsewhere / "clothing" / "manifest.json").is_file()


# --------------------------------------------------------------------------- two processes

_CHILD = """
import os, sys, time
from pathlib import Path
from recbole_bundlellm.data import prepare_domain

real_rename = os.rename

def slow_rename(src, dst):
    # Widen the window between the two renames of a folder swap, so two unlocked swaps overlap.
    real_rename(src, dst)
    time.sleep(0.3)

os.rename = slow_rename
tiny, out, go, ready = map(Path, sys.argv[1:5])
ready.touch()
while not go.exists():
    time.sleep(0.01)
for _ in range(2):
    prepare_domain(tiny, out, "clothing", seed=0, force=True)
"""


def _spawn(args: list[str], code: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_preparing_the_same_output(tmp_path):
    out, go = tmp_path / "out", tmp_path / "go"
    card = prepare_domain(TINY, out, "clothing", seed=0)
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    children = [_spawn([str(TINY), str(out), str(go), str(r)], _CHILD) for r in ready]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in ready):  # both imported and waiting, so they start together
        assert time.monotonic() < deadline and all(c.poll() is None for c in children)
        time.sleep(0.05)
    go.touch()
    results = [(c.wait(timeout=120), c.stderr.read()) for c in children]
    assert [code for code, _ in results] == [0, 0], [err[-2000:] for _, err in results]
    assert sorted(p.name for p in out.iterdir()) == ["clothing", "clothing_next"]  # no leftovers
    assert json.loads((out / "clothing" / "dataset_card.json").read_text()) == card
    assert (out / "clothing_next" / "clothing_next.inter").is_file()


_HOLDER = """
import sys, time
from pathlib import Path
from recbole_bundlellm.data.safety import output_lock

out, held = Path(sys.argv[1]), Path(sys.argv[2])
with output_lock(out, "clothing"):
    held.touch()
    time.sleep(float(sys.argv[3]))
"""


def test_busy_output_waits_then_fails_with_a_clear_message(tmp_path):
    from recbole_bundlellm.data.safety import output_lock

    out, held = tmp_path / "out", tmp_path / "held"
    holder = _spawn([str(out), str(held), "2"], _HOLDER)
    try:
        deadline = time.monotonic() + 60
        while not held.exists():
            assert holder.poll() is None, holder.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        start = time.monotonic()
        busy = pytest.raises(DataError, match=r"another process is writing .*clothing")
        with busy as info, output_lock(out, "clothing", timeout=0.5):
            pass
        assert 0.4 < time.monotonic() - start < 3
        assert ".clothing.prepare.lock" in str(info.value)
        # With a longer wait it gets the lock once the holder is done.
        with output_lock(out, "clothing", timeout=60):
            assert holder.wait(timeout=10) == 0
    finally:
        holder.kill()
        holder.wait()
    assert not (out / ".clothing.prepare.lock").exists()  # the lock file is not left behind
