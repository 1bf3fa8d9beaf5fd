"""Distillation end to end: the real teacher server over HTTP, a real process kill and resume,
faults through the proxy, and the knowledge commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from recbole_bundlellm.commands.cli import main
from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.commands.distill import DistillError, distill
from recbole_bundlellm.knowledge.extraction import ExtractionRun
from recbole_bundlellm.knowledge.extractor import Extraction, KnowledgeExtractor
from recbole_bundlellm.knowledge.store import KnowledgeStore
from recbole_bundlellm.knowledge.summary import KindSummary

BUNDLELLM = [sys.executable, "-m", "recbole_bundlellm.commands.cli"]
KINDS = ["patterns", "rules", "thoughts"]


def tiny_config(tiny_data: Path, store: Path, **extra) -> dict:
    return {"dataset": "clothing", "data_path": str(tiny_data), "knowledge_dir": str(store),
            "knowledge_types": ["patterns"], **extra}


# -- without a teacher ------------------------------------------------------------------------
def test_patterns_distill_resumes_and_samples(tiny_data, tmp_path):
    store = tmp_path / "kn"
    summary = distill([], tiny_config(tiny_data, store, sampling={"sampler": "length", "ratio": 0.5, "seed": 3}))
    patterns = summary.kinds["patterns"]
    assert (patterns.records, patterns.new, summary.sessions) == (9, 9, 9)
    assert summary.teacher == {}  # no teacher needed, none configured
    kset = json.loads(Path(summary.knowledge_set).read_text())
    assert kset["selection"]["clothing"]["sampler"] == "length"
    assert len(kset["selection"]["clothing"]["session_ids"]) == round(0.5 * 9)
    runs = list((store / "runs").glob("*.json"))
    assert len(runs) == 1 and json.loads(runs[0].read_text())["kinds"]["patterns"]["records"] == 9
    again = distill([], tiny_config(tiny_data, store))
    assert again.kinds["patterns"].new == 0 and again.kinds["patterns"].records == 9
    assert len(KnowledgeStore(store).records()) == 9
    # Another configuration of the extractor makes new records beside the old ones.
    changed = distill([], tiny_config(tiny_data, store, patterns={"max_size": 3}))
    assert changed.kinds["patterns"].new == 9 and len(KnowledgeStore(store).records()) == 18


def test_distill_errors_are_clear(tiny_data, tmp_path, capsys):
    base = tiny_config(tiny_data, tmp_path / "kn")
    cases = [
        ({"knowledge_types": ["patterns", "rulez"]}, "unknown extractor 'rulez'; did you mean 'rules'"),
        ({"sampling": {"sampler": "random", "ratio": 0.9}}, "sampling.ratio must be a number >= 0.1 and <= 0.7; got 0.9"),
        ({"sampling": {"sampler": "randm"}}, "unknown sampler 'randm'; did you mean 'random'"),
        ({"knowledge_types": ["rules"], "teacher": {"base_url": "http://127.0.0.1:9/v1", "concurency": 2}},
         "unknown setting 'teacher.concurency'; did you mean 'concurrency'"),
        ({"patterns": {"max_size": 9}}, "patterns"),
    ]
    for extra, message in cases:
        overrides = [f"--{k}={json.dumps(v)}" for k, v in {**base, **extra}.items()]
        assert main(["distill", "--no-progress", *overrides]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "kn" / "calls.jsonl").exists()  # failed before any work


def test_knowledge_show_and_export(tiny_data, tmp_path, capsys):
    store = tmp_path / "kn"
    distill([], tiny_config(tiny_data, store))
    assert main(["knowledge", "show", "--dir", str(store)]) == 0
    out = capsys.readouterr().out
    assert "9 records" in out and "clothing" in out and "patterns" in out
    assert main(["knowledge", "show", "--dir", str(store), "--kind", "patterns", "-n", "2"]) == 0
    shown = capsys.readouterr().out
    assert shown.count('"kind": "patterns"') == 2
    assert main(["knowledge", "export", "--dir", str(store), "--out", str(tmp_path / "x.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert len(rows) == 9 and {r["kind"] for r in rows} == {"patterns"} and all(r["record_id"] for r in rows)
    assert main(["knowledge", "show", "--dir", str(tmp_path / "none")]) == 2
    assert "no knowledge store" in capsys.readouterr().err


# -- with the real teacher server ------------------------------------------------------------
def teacher_yaml(tmp_path: Path, electronic_data: Path, base_url: str, store: Path, **teacher) -> Path:
    config = {
        "dataset": "electronic", "data_path": str(electronic_data), "knowledge_dir": str(store),
        "knowledge_types": KINDS, "distill_max_sessions": 3,
        "teacher": {"base_url": base_url, "max_tokens": 48, "concurrency": 2, "timeout": 60,
                    "backoff_base": 0.05, "backoff_max": 0.2, **teacher},
        "rules": {"max_tokens_answer": 48, "max_tokens_rules": 48},
        "thoughts": {"max_tokens": 64},
        "sampling": {"sampler": "difficulty", "ratio": 0.7, "seed": 0},
    }
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_real_distillation_killed_and_resumed(teacher_server, fault_proxy, electronic_data, tmp_path):
    """All three types on 3 Electronic training sessions; SIGKILL mid-run; resume; a cached re-run."""
    store = tmp_path / "kn"
    config = teacher_yaml(tmp_path, electronic_data, fault_proxy.base_url, store)
    proc = subprocess.Popen([*BUNDLELLM, "distill", "-c", str(config), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(lines(store / "calls.jsonl")) < 4 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, f"distill ended before the kill: {proc.stdout.read()}"
    os.kill(proc.pid, signal.SIGKILL)  # a real kill, no chance to clean up
    proc.wait(30)
    before_calls = {c["key"] for c in lines(store / "calls.jsonl")}
    records_at_kill = lines(store / "records.jsonl")
    before_records = {r["record_id"] for r in records_at_kill}
    # Calls finished before the kill for sessions that were not finished yet: the resumed run
    # must take exactly these from the store.
    orphan_calls = before_calls - {k for r in records_at_kill for k in r["provenance"].get("calls", [])}
    requests_before = fault_proxy.requests
    assert 4 <= len(before_calls) < 3 * 4  # killed midway: some calls done, not all

    resumed = subprocess.run([*BUNDLELLM, "distill", "-c", str(config), "--no-progress"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    calls = lines(store / "calls.jsonl")
    records = lines(store / "records.jsonl")
    keys = [c["key"] for c in calls]
    assert len(keys) == len(set(keys)), "a teacher call was stored twice"
    assert before_calls <= set(keys)
    new_keys = set(keys) - before_calls
    summary = json.loads(sorted((store / "runs").glob("*.json"))[-1].read_text())
    # No completed call was repeated: the resumed run sent exactly the calls it lacked (and, once,
    # the rules answer's schema in OpenAI's form, which llama-cpp-python's server refuses).
    assert summary["teacher"]["structured_refusals"] <= 1
    assert fault_proxy.requests - requests_before == len(new_keys) + summary["teacher"]["structured_refusals"]
    ids = [r["record_id"] for r in records]
    assert len(ids) == len(set(ids)) and before_records <= set(ids)
    assert sorted((r["kind"], r["unit"]) for r in records) == sorted(
        (k, s) for k in KINDS for s in {r["unit"] for r in records})
    assert len(records) == 3 * len(KINDS)
    for rec in records:  # provenance of every record
        prov = rec["provenance"]
        assert prov["extractor"] == rec["kind"] and prov["created_at"]
        if rec["kind"] != "patterns":
            assert prov["teacher_model"] == "smollm2-135m-instruct" and prov["calls"]
            assert prov["teacher_response_models"] == ["smollm2-135m-instruct"]  # what answered
            assert set(prov["calls"]) <= set(keys)
        if rec["status"] == "failed":
            assert rec["reason"]
    assert summary["teacher"]["calls_made"] == len(new_keys)
    assert summary["teacher"]["calls_cached"] == len(orphan_calls) and summary["knowledge_set"]

    requests = fault_proxy.requests
    cached = subprocess.run([*BUNDLELLM, "distill", "-c", str(config), "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert cached.returncode == 0, cached.stderr
    assert fault_proxy.requests == requests  # a fully cached run makes zero calls
    assert "0 calls made" in cached.stdout
    assert len(lines(store / "records.jsonl")) == len(records)


@pytest.mark.slow
def test_faults_end_in_a_finished_store_or_a_clear_error(teacher_server, fault_proxy, electronic_data, tmp_path):
    store = tmp_path / "kn"
    # Short answers keep real calls far below the 8 s timeout; the injected delay is longer.
    config = teacher_yaml(tmp_path, electronic_data, fault_proxy.base_url, store, timeout=8, max_retries=4,
                          concurrency=1)
    overrides = {"knowledge_types": ["rules"], "distill_max_sessions": 2, "sampling": None,
                 "rules": {"max_tokens_answer": 24, "max_tokens_rules": 24}}
    # The endpoint goes down for good after two answers: a clear error, nothing corrupted. (The
    # first request is refused by the embedded server: the rules answer's schema in OpenAI's form,
    # which llama-cpp-python does not take; the client asks in its json_object form from then on.)
    fault_proxy.script(["pass", "pass", "pass"] + [("status", 500)] * 50)
    with pytest.raises(DistillError, match="run the same command again to resume"):
        distill([config], overrides)
    kept = KnowledgeStore(store)
    assert len(kept.calls()) == 2 and len(kept.records()) <= 1
    # Back up, but flaky: 429, 500, a dropped connection and a timeout, each retried.
    fault_proxy.script([("status", 429), ("status", 500), "drop", ("delay", 9.0)])
    summary = distill([config], overrides)
    assert summary.kinds["rules"].records == 2 and summary.kinds["rules"].new == 2 - len(kept.records())
    assert summary.teacher["retries"] == 4
    assert set(summary.teacher["errors"]) == {"http_429", "http_500", "connection", "timeout"}
    final = KnowledgeStore(store)
    assert len(final.calls()) == 2 + summary.teacher["calls_made"] and len(final.records()) == 2
    assert {c.key for c in kept.calls()} <= {c.key for c in final.calls()}


def test_multi_domain_accumulation_from_one_store(tiny_data, tmp_path):
    """Two domains distilled into one store, then one type accumulated over both."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data / "clothing", data / "clothing")
    (data / "food").mkdir()
    for path in (data / "clothing").iterdir():  # the same sessions, served as a second domain
        shutil.copy(path, data / "food" / path.name.replace("clothing", "food"))
    store = tmp_path / "kn"
    distill([], tiny_config(data, store, dataset="food"))
    summary = distill([], tiny_config(data, store, sampling={"sampler": "random", "ratio": 0.7, "seed": 0,
                                                              "domains": ["clothing", "food"]},
                                      patterns={"min_count": 1, "min_support": 0.01}))
    kset = json.loads(Path(summary.knowledge_set).read_text())
    assert kset["domains"] == ["clothing", "food"] and set(kset["selection"]) == {"clothing", "food"}
    assert {item["domain"] for item in kset["items"]} <= {"clothing", "food"}
    # food was distilled with the default patterns settings, so only clothing has records of this fingerprint
    assert kset["selection"]["food"]["kinds"]["patterns"]["available"] == 0
    assert kset["selection"]["clothing"]["kinds"]["patterns"]["available"] == 9
    assert any("food has no ok patterns records" in note for note in summary.notes)


# -- a full disk, a read-only store, damaged lines, exports into the store -------------------------
def tiny_teacher_config(tiny_data: Path, store: Path, base_url: str, **extra) -> dict:
    """The rules extractor on the first 3 tiny sessions, with short answers."""
    teacher = {"base_url": base_url, "max_tokens": 16, "concurrency": 1, "timeout": 60, "backoff_base": 0.05,
               "backoff_max": 0.2, **extra.pop("teacher", {})}
    extra = {"distill_max_sessions": 3, **extra}
    return tiny_config(tiny_data, store, knowledge_types=["rules"], teacher=teacher,
                       rules={"max_tokens_answer": 16, "max_tokens_rules": 16}, **extra)


@pytest.mark.slow
def test_a_disk_that_fills_stops_the_distillation_and_the_store_survives(fault_proxy, tiny_data, tmp_path,
                                                                         disk_full):
    store = tmp_path / "kn"
    config = tiny_teacher_config(tiny_data, store, fault_proxy.base_url)
    disk = disk_full("calls.jsonl", after=2)  # the third teacher call finds the disk full
    with pytest.raises(DistillError, match=r"no space left on device \(calls.jsonl: the unfinished line was taken "
                                           r"back.*\n.*keeps every call and record written before"):
        distill([], config)
    assert disk.refused == 2 and (store / "calls.jsonl").read_bytes().endswith(b"\n")
    kept = KnowledgeStore(store)
    assert len(kept.calls()) == 2
    disk.free()
    summary = distill([], config)  # space freed: the same command resumes
    assert summary.kinds["rules"].records == 3 and summary.kinds["rules"].errors == 0
    final = KnowledgeStore(store)
    assert {c.key for c in kept.calls()} <= {c.key for c in final.calls()}
    assert len(lines(store / "calls.jsonl")) == len(final.calls())  # each call once
    assert not (store / "calls.jsonl.damaged").exists()


def test_export_refuses_to_write_into_the_store(tiny_data, tmp_path, capsys):
    store = tmp_path / "kn"
    distill([], tiny_config(tiny_data, store))
    before = (store / "records.jsonl").read_bytes()
    for out in (store / "records.jsonl", store / "sets" / "x.jsonl"):
        assert main(["knowledge", "export", "--dir", str(store), "--out", str(out)]) == 2
        assert f"error: refusing to export into the knowledge store {store.resolve()}" in capsys.readouterr().err
    assert (store / "records.jsonl").read_bytes() == before and not (store / "sets" / "x.jsonl").exists()


def test_a_line_of_the_wrong_shape_is_moved_aside_or_named(tiny_data, tmp_path, capsys, caplog, read_only):
    import shutil

    store = tmp_path / "kn"
    distill([], tiny_config(tiny_data, store))
    good = (store / "records.jsonl").read_text().splitlines()
    (store / "records.jsonl").write_text("\n".join(good[:2] + ["[]"] + good[2:4] + ['{"kind": "patterns"}']
                                                   + good[4:]) + "\n")
    shutil.copytree(store, tmp_path / "copy")
    read_only(tmp_path / "copy")
    assert main(["knowledge", "show", "--dir", str(tmp_path / "copy")]) == 2
    err = capsys.readouterr().err
    assert ("records.jsonl:3: damaged line (not a knowledge record: a JSON list, not an object); it cannot be moved "
            f"aside now: cannot write to the knowledge store {tmp_path / 'copy'}: permission denied") in err
    assert main(["knowledge", "show", "--dir", str(store)]) == 0
    out = capsys.readouterr().out
    assert "9 records" in out and "damaged lines moved aside: records.jsonl.damaged" in out
    assert "moved 2 damaged lines (3, 6) to records.jsonl.damaged" in caplog.text
    assert (store / "records.jsonl").read_text().splitlines() == good
    assert distill([], tiny_config(tiny_data, store)).kinds["patterns"].new == 0


def test_a_read_only_store_is_a_clear_error(tiny_data, tmp_path, capsys, read_only):
    store = tmp_path / "kn"
    distill([], tiny_config(tiny_data, store))
    read_only(store)
    overrides = [f"--{k}={json.dumps(v)}" for k, v in tiny_config(tiny_data, store).items()]
    assert main(["distill", "--no-progress", *overrides]) == 2
    assert f"error: cannot write to the knowledge store {store}: permission denied" in capsys.readouterr().err
    # Reading it needs no write; an export into a folder without write permission is refused clearly.
    assert main(["knowledge", "export", "--dir", str(store), "--out", str(tmp_path / "x.jsonl")]) == 0
    (tmp_path / "ro").mkdir()
    read_only(tmp_path / "ro")
    assert main(["knowledge", "export", "--dir", str(store), "--out", str(tmp_path / "ro" / "x.jsonl")]) == 2
    assert f"error: cannot write {tmp_path / 'ro' / 'x.jsonl'}: permission denied" in capsys.readouterr().err


# -- the teacher's model, all-failed notes ---------------------------------------------------------
@pytest.mark.slow
def test_a_model_the_teacher_does_not_serve_is_refused(fault_proxy, tiny_data, tmp_path, capsys):
    store = tmp_path / "kn"
    config = tiny_teacher_config(tiny_data, store, fault_proxy.base_url, teacher={"model": "gpt-4o"})
    assert main(["distill", "--no-progress", *[f"--{k}={json.dumps(v)}" for k, v in config.items()]]) == 2
    err = capsys.readouterr().err
    assert "does not serve model 'gpt-4o'; it serves: smollm2-135m-instruct" in err
    assert fault_proxy.requests == 0 and not lines(store / "records.jsonl")


@pytest.mark.slow
def test_a_domain_whose_records_all_failed_says_so(fault_proxy, tiny_data, tmp_path):
    store = tmp_path / "kn"
    fault_proxy.script([("status", 400)] * 20)  # every session's first call is rejected: failed records
    summary = distill([], tiny_teacher_config(tiny_data, store, fault_proxy.base_url,
                                              sampling={"sampler": "random", "ratio": 0.5, "seed": 0}))
    assert summary.kinds["rules"].failed == 3 and summary.kinds["rules"].ok == 0
    assert summary.notes == [(f"clothing has no ok rules records (all 3 failed: see `bundlellm knowledge show --dir "
                              f"{store} --status failed --kind rules --domain clothing`); it adds nothing to the set")]


# -- Ctrl-C ------------------------------------------------------------------------------------------
class Gate(KnowledgeExtractor):
    """A teacher-less extractor that needs the executor's threads: session ``hold`` waits for ``release``."""

    name = "gate"
    needs_teacher = True

    def __init__(self, hold: str, release: threading.Event) -> None:
        super().__init__()
        self.hold, self.release = hold, release

    def extract_session(self, session: Session, teacher: Any) -> Extraction:
        if session.session_id == self.hold:
            self.release.wait(30)
        return Extraction("ok", {"session": session.session_id}, session.session_id)

    def aggregate(self, records, domain):
        return []


class UnitsOnly:
    """What the executor asks of a teacher client: one unit per session (Gate never calls it)."""

    def for_unit(self) -> None:
        return None


@pytest.fixture
def ctrl_c_reaches_python():
    """Ctrl-C raises KeyboardInterrupt here and in the commands started meanwhile, even when the
    suite itself was started in the background: a shell starts background jobs with SIGINT
    ignored, Python then installs no handler, and children inherit the ignored disposition."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_the_executor_at_once_and_keeps_what_finished(tmp_path, ctrl_c_reaches_python):
    release = threading.Event()
    store = KnowledgeStore(tmp_path)

    def interrupt_after_the_first(record) -> None:
        if record.unit == "0":  # a real SIGINT to the main thread, while session 1 is still running
            threading.Timer(0.3, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)).start()

    run = ExtractionRun(store, "d", {"gate": Gate("1", release)}, {"gate": "fp"}, plugins={"gate": "test"},
                        client=UnitsOnly(), concurrency=2, on_record=interrupt_after_the_first, progress=False)
    guard = threading.Timer(8, release.set)  # unblocks session 1 if the executor waits for it
    guard.start()
    started = time.monotonic()
    try:
        with store.writer(), pytest.raises(KeyboardInterrupt):
            run.extract("gate", [Session(str(i), ("a",), ("A",)) for i in range(4)], KindSummary())
        elapsed = time.monotonic() - started
    finally:
        release.set()
        guard.cancel()
    assert elapsed < 3
    assert sorted(r.unit for r in KnowledgeStore(tmp_path).records()) == ["0", "2", "3"]


@pytest.mark.slow
def test_ctrl_c_during_distill_exits_at_once_keeping_the_finished_records(fault_proxy, tiny_data, tmp_path,
                                                                          ctrl_c_reaches_python):
    store = tmp_path / "kn"
    config = tmp_path / "distill.yaml"
    config.write_text(yaml.safe_dump(tiny_teacher_config(tiny_data, store, fault_proxy.base_url, distill_max_sessions=6,
                                                         teacher={"concurrency": 2})))
    proc = subprocess.Popen([*BUNDLELLM, "distill", "-c", str(config), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not lines(store / "records.jsonl") and proc.poll() is None:
            time.sleep(0.05)
        fault_proxy.script([("delay", 60.0)] * 50)  # from now on the teacher is very slow
        while time.time() < deadline and fault_proxy.pending == 50 and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, f"distill ended before the interrupt: {proc.communicate()}"
        finished = {r["record_id"] for r in lines(store / "records.jsonl")}
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert elapsed < 5, err
    # 130 from the command's Ctrl-C handler; 1 for a KeyboardInterrupt left to `python -m` itself.
    assert proc.returncode in (130, 1), err
    assert "interrupted" in err and "run the same command again to resume" in err
    records = lines(store / "records.jsonl")
    assert finished and finished <= {r["record_id"] for r in records} and len(records) < 6
    keys = [c["key"] for c in lines(store / "calls.jsonl")]
    assert len(keys) == len(set(keys)) == len(KnowledgeStore(store).calls())
