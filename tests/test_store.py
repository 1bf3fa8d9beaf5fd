"""The knowledge store: append-only, crash-safe, no duplicates, one writer at a time."""

from __future__ import annotations

import contextlib
import errno
import json
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recbole_bundlellm.knowledge.records import KnowledgeRecord, record_id
from recbole_bundlellm.knowledge.store import KnowledgeStore, StoreError, StoreLocked
from recbole_bundlellm.teacher.calls import CallRecord, Usage, call_key


def make_call(i: int) -> CallRecord:
    messages = [{"role": "user", "content": f"question {i}"}]
    key = call_key("m", messages, {"temperature": 0.0})
    return CallRecord(key, "m", {"model": "m", "messages": messages}, f"answer {i}", "stop",
                      Usage(10, 2), "2026-01-01T00:00:00Z", 0.1)


def make_record(unit: str, status: str = "ok") -> KnowledgeRecord:
    return KnowledgeRecord("rules", "electronic", unit, "fp", status, {"rules": ["r"]}, "r",
                           None if status == "ok" else "no rules parsed", unit)


def test_keys_are_those_of_existing_stores():
    # Pinned values computed before the call types moved to recbole_bundlellm.teacher.calls: a
    # different key would make every call in an existing store miss (and be paid for again).
    messages = [{"role": "system", "content": "Answer in one short sentence."},
                {"role": "user", "content": "Name a colour \u2014 of a t-shirt."}]
    params = {"temperature": 0.0, "seed": 0, "max_tokens": 16}
    assert call_key("smollm2-135m-instruct", messages, params) == "346d32cf9c93a91267b075d199e94817929c25c2"
    assert record_id("rules", "electronic", "s1", "fp") == "0a059e1560f8d5ea212c3756"


def test_round_trip_and_no_duplicates(tmp_path):
    store = KnowledgeStore(tmp_path)
    with store.writer():
        assert store.put_call(make_call(1)) and not store.put_call(make_call(1))
        assert store.put_record(make_record("1")) and not store.put_record(make_record("1"))
        store.put_record(make_record("2", "failed"))
    again = KnowledgeStore(tmp_path)
    assert [c.text for c in again.calls()] == ["answer 1"]
    assert again.get_call(make_call(1).key).usage.total_tokens == 12
    assert [r.unit for r in again.records()] == ["1", "2"]
    assert [r.unit for r in again.records(status="failed")] == ["2"]
    assert again.records(status="failed")[0].reason == "no rules parsed"
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == 2


def test_writing_needs_the_writer_lock(tmp_path):
    with pytest.raises(StoreError, match="outside `with store.writer"):
        KnowledgeStore(tmp_path).put_call(make_call(1))


def test_a_torn_last_line_is_cut_off_and_nothing_else_lost(tmp_path, caplog):
    store = KnowledgeStore(tmp_path)
    with store.writer():
        for i in range(3):
            store.put_call(make_call(i))
    with open(tmp_path / "calls.jsonl", "ab") as f:  # what a kill in the middle of a write leaves
        f.write(b'{"key": "abc", "text": "half a li')
    reader = KnowledgeStore(tmp_path)  # reading tolerates it without touching the file
    assert len(reader.calls()) == 3
    with reader.writer():  # the next writer repairs it, then appends cleanly
        reader.put_call(make_call(3))
    assert "cut off an incomplete last line" in caplog.text
    lines = (tmp_path / "calls.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)


@pytest.mark.parametrize("short", [True, False], ids=["short-write", "enospc"])
def test_a_failed_append_is_taken_back_and_the_store_goes_on(tmp_path, disk_full, short):
    store = KnowledgeStore(tmp_path)
    disk = disk_full("calls.jsonl", after=2, short=short)
    with store.writer():
        store.put_call(make_call(0))
        store.put_call(make_call(1))
        with pytest.raises(StoreError, match=rf"cannot write to the knowledge store {tmp_path}: no space left on "
                                             r"device \(calls.jsonl: the unfinished line was taken back"):
            store.put_call(make_call(2))
        assert disk.refused >= 1 and store.get_call(make_call(2).key) is None
        assert (tmp_path / "calls.jsonl").read_bytes().endswith(b"\n")  # nothing half-written is left
        disk.free()  # space was freed: the next append starts on a line of its own
        assert store.put_call(make_call(2))
    lines = (tmp_path / "calls.jsonl").read_text().splitlines()
    assert [json.loads(line)["text"] for line in lines] == ["answer 0", "answer 1", "answer 2"]
    assert [c.text for c in KnowledgeStore(tmp_path).calls()] == ["answer 0", "answer 1", "answer 2"]


def test_an_append_that_cannot_be_taken_back_stops_every_later_one(tmp_path, disk_full, monkeypatch):
    store = KnowledgeStore(tmp_path)
    disk = disk_full("records.jsonl", after=1)

    def no_truncate(fd, length):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with store.writer():
        store.put_record(make_record("1"))
        monkeypatch.setattr(os, "ftruncate", no_truncate)
        with pytest.raises(StoreError, match="no space left on device"):
            store.put_record(make_record("2"))
        disk.free()
        with pytest.raises(StoreError, match="unfinished line .* could not be taken back"):
            store.put_record(make_record("3"))  # never written after a partial line
    monkeypatch.undo()
    assert not (tmp_path / "records.jsonl").read_bytes().endswith(b"\n")
    with store.writer():  # the next writer cuts the unfinished line off
        store.put_record(make_record("3"))
    assert [r.unit for r in KnowledgeStore(tmp_path).records()] == ["1", "3"]


def write_lines(path, lines) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def damaged_store(root):
    """A store with damaged lines amid good ones: bad JSON and JSON of the wrong shape."""
    good = [json.dumps(make_record(str(i)).to_json()) for i in range(3)]
    wrong_status = json.dumps({**make_record("x").to_json(), "status": "maybe"})
    write_lines(root / "records.jsonl", [good[0], "not json", good[1], "[]", '{"kind": "rules"}', good[2],
                                         wrong_status])
    write_lines(root / "calls.jsonl", [json.dumps(make_call(0).to_json()), '{"key": 7}',
                                       json.dumps(make_call(1).to_json())])
    return good


def test_damaged_lines_are_moved_aside_and_the_good_ones_kept(tmp_path, caplog):
    good = damaged_store(tmp_path)
    store = KnowledgeStore(tmp_path)  # opening it repairs it
    assert [r.unit for r in store.records()] == ["0", "1", "2"]
    assert [c.text for c in store.calls()] == ["answer 0", "answer 1"]
    assert (tmp_path / "records.jsonl").read_text().splitlines() == good
    assert len((tmp_path / "calls.jsonl").read_text().splitlines()) == 2
    moved = [line for line in (tmp_path / "records.jsonl.damaged").read_text().splitlines()
             if not line.startswith("#")]
    assert [line.split("\t", 1)[0] for line in moved] == ["2", "4", "5", "7"]
    assert moved[0] == "2\tnot json" and moved[1] == "4\t[]"
    assert (tmp_path / "calls.jsonl.damaged").read_text().splitlines()[-1] == '2\t{"key": 7}'
    assert f"{tmp_path / 'records.jsonl'}: moved 4 damaged lines (2, 4, 5, 7) to records.jsonl.damaged" in caplog.text
    assert "records.jsonl:5: damaged line (not a knowledge record: " in caplog.text
    caplog.clear()
    with store.writer():
        store.put_record(make_record("3"))
    assert [r.unit for r in KnowledgeStore(tmp_path).records()] == ["0", "1", "2", "3"]
    assert "damaged" not in caplog.text  # repaired once


def test_a_damaged_line_that_cannot_be_moved_aside_is_an_error_naming_file_and_line(tmp_path, read_only):
    damaged_store(tmp_path)
    before = (tmp_path / "records.jsonl").read_bytes()
    read_only(tmp_path)
    with pytest.raises(StoreError, match=r"calls.jsonl:2: damaged line \(not a teacher call: .*\); it cannot be "
                                         rf"moved aside now: cannot write to the knowledge store {tmp_path}: "
                                         "permission denied"):
        KnowledgeStore(tmp_path)
    assert (tmp_path / "records.jsonl").read_bytes() == before


def test_writing_a_read_only_store_is_a_clear_error(tmp_path, read_only):
    store = KnowledgeStore(tmp_path)
    with store.writer():
        store.put_record(make_record("1"))
    read_only(tmp_path)
    with pytest.raises(StoreError, match=rf"^cannot write to the knowledge store {tmp_path}: permission denied$"), \
            store.writer():
        pass
    assert [r.unit for r in KnowledgeStore(tmp_path).records()] == ["1"]  # reading needs no write


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod; the read_only fixture covers the path")
def test_writing_a_chmod_read_only_store_is_a_clear_error(tmp_path):
    store = KnowledgeStore(tmp_path / "kn")
    with store.writer():
        store.put_record(make_record("1"))
    os.chmod(tmp_path / "kn", 0o555)
    try:
        with pytest.raises(StoreError, match="cannot write to the knowledge store .*: permission denied"), \
                store.writer():
            pass
    finally:
        os.chmod(tmp_path / "kn", 0o755)


def _hold_lock(path: str, ready, release) -> None:
    store = KnowledgeStore(path)
    with store.writer():
        ready.set()
        release.wait(30)


@contextlib.contextmanager
def another_writer(path: Path) -> Iterator[None]:
    """A second process holding the store's writer lock for the duration of the block."""
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(path), ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        yield
    finally:
        release.set()
        proc.join(30)


def test_one_writer_at_a_time(tmp_path):
    with another_writer(tmp_path):
        with pytest.raises(StoreLocked, match="being written by another process"):
            with KnowledgeStore(tmp_path).writer():
                pass
    with KnowledgeStore(tmp_path).writer():  # free again once the holder is gone
        pass


def test_a_damaged_line_met_while_another_process_writes_is_an_error(tmp_path):
    with another_writer(tmp_path):
        damaged_store(tmp_path)  # damaged after that writer opened the store
        with pytest.raises(StoreError, match=r"calls.jsonl:2: damaged line .*; it cannot be moved aside now: "
                                             "knowledge store .* is being written by another process"):
            KnowledgeStore(tmp_path)


def _append_forever(path: str) -> None:
    store = KnowledgeStore(path, fsync=False)
    with store.writer():
        i = 0
        while True:
            store.put_call(make_call(i))
            store.put_record(make_record(str(i)))
            i += 1


def test_sigkill_while_appending_leaves_a_readable_store(tmp_path):
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_append_forever, args=(str(tmp_path),))
    proc.start()
    deadline = time.time() + 30
    while time.time() < deadline and (not (tmp_path / "records.jsonl").exists()
                                        or (tmp_path / "records.jsonl").stat().st_size < 20_000):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    store = KnowledgeStore(tmp_path)
    with store.writer():  # repairs a torn tail if the kill hit mid-line
        pass
    calls, records = store.calls(), store.records()
    assert len(records) > 10
    # Calls are written before their record, so every record has its call; at most one call more.
    assert len(calls) - len(records) in (0, 1)
    assert sorted(int(r.unit) for r in records) == list(range(len(records)))
    for name in ("calls.jsonl", "records.jsonl"):
        lines = (tmp_path / name).read_text().splitlines()
        assert len(lines) == len(set(lines)) and all(json.loads(line) for line in lines)
