"""The knowledge store: append-only, crash-safe, no duplicates, one writer at a time."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time

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


def test_a_damaged_middle_line_is_an_error_naming_file_and_line(tmp_path):
    (tmp_path / "records.jsonl").write_text(
        json.dumps(make_record("1").to_json()) + "\nnot json\n" + json.dumps(make_record("2").to_json()) + "\n")
    with pytest.raises(StoreError, match=r"records.jsonl:2: damaged line"):
        KnowledgeStore(tmp_path)


def _hold_lock(path: str, ready, release) -> None:
    store = KnowledgeStore(path)
    with store.writer():
        ready.set()
        release.wait(30)


def test_one_writer_at_a_time(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        with pytest.raises(StoreLocked, match="being written by another process"):
            with KnowledgeStore(tmp_path).writer():
                pass
    finally:
        release.set()
        proc.join(30)
    with KnowledgeStore(tmp_path).writer():  # free again once the holder is gone
        pass


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
