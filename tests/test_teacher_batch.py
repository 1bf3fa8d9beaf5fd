"""Batch mode (``teacher.mode: batch``) end to end against the kit's fake teacher, which serves the
Files and Batches APIs over real HTTP: the calls a distillation needs go out as batches, come back
into the store under the synchronous keys, survive a SIGKILL while polling, and failed lines are
asked again synchronously."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from recbole_bundlellm.commands.distill import DistillError, distill
from recbole_bundlellm.knowledge.store import KnowledgeStore
from recbole_bundlellm.settings import SettingsError, load_settings
from recbole_bundlellm.teacher.batch import batch_jobs
from recbole_bundlellm.teacher.settings import TeacherSettings
from recbole_bundlellm.testing import Answer, FakeTeacherServer

from teacher_fixtures import THOUGHT_ANSWER, extractor_answer as answer


def config(tiny_data: Path, store: Path, server: FakeTeacherServer, kinds: list[str], **teacher: Any) -> dict:
    return {"dataset": "clothing", "data_path": str(tiny_data), "knowledge_dir": str(store),
            "knowledge_types": kinds,
            "teacher": server.config(**{"mode": "batch", "batch_poll_interval": 0.01, **teacher})}


def test_batch_distillation_end_to_end_then_a_sync_run_makes_no_call(tiny_data, tmp_path):
    store = tmp_path / "kn"
    with FakeTeacherServer(answer, batch_polls=2) as server:
        summary = distill([], config(tiny_data, store, server, ["patterns", "rules", "thoughts"],
                                     price_input_per_1m=2.0, price_output_per_1m=10.0), progress=False)
        # Three rounds: the rules loop's three turns (thoughts and the first turn share the first).
        assert list(server.batches) == ["batch_1", "batch_2", "batch_3"] and server.requests == []
        assert all(b["status"] == "completed" for b in server.batches.values())
        assert all(summary.kinds[k].records == 9 and summary.kinds[k].new == 9 for k in ("patterns", "rules", "thoughts"))
        assert summary.kinds["rules"].ok == 9
        t = summary.teacher
        lines = len(server.batch_requests)
        assert (t["mode"], t["calls_made"], t["batch"]["calls"], t["batch"]["batches_created"]) == ("batch", 0, lines, 3)
        # Priced at the batch prices: half the synchronous ones unless given.
        usage = t["batch"]["usage"]
        assert t["cost"] == pytest.approx((usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 5.0) / 1e6)
        assert t["cost"] > 0 and "batch:" in summary.format()
        kept = KnowledgeStore(store)
        assert len(kept.calls()) == lines and all(c.request["batch_id"].startswith("batch_") for c in kept.calls())
        assert all(not job.open for job in batch_jobs(kept.batch_events()).values())
        for rules in kept.records("rules"):
            p = rules.provenance
            assert p["calls_batched"] == len(p["calls"]) >= 2 and p["calls_made"] == p["calls_cached"] == 0
        # The same keys as synchronous calls: a sync run that must redo every record makes no call.
        (store / "records.jsonl").unlink()
        again = distill([], config(tiny_data, store, server, ["rules", "thoughts"], mode="sync"), progress=False)
        assert server.requests == [] and len(server.batches) == 3
        assert (again.teacher["calls_made"], again.teacher["calls_cached"]) == (0, lines)
        assert again.kinds["rules"].ok == 9 and again.kinds["rules"].new == 9


def test_batches_hold_at_most_batch_max_requests(tiny_data, tmp_path):
    with FakeTeacherServer(answer) as server:
        summary = distill([], config(tiny_data, tmp_path / "kn", server, ["thoughts"], batch_max_requests=4),
                          progress=False)
    assert [b["request_counts"]["total"] for b in server.batches.values()] == [4, 4, 1]
    assert summary.kinds["thoughts"].records == 9 and server.requests == []


def test_explicit_batch_prices_win(tiny_data, tmp_path):
    settings = load_settings(TeacherSettings, {"price_input_per_1m": 2.0, "price_batch_input_per_1m": 1.5,
                                               "price_output_per_1m": 8.0}, "teacher")
    assert settings.batch_prices() == (1.5, 4.0)


def test_a_failed_line_is_asked_again_synchronously(tiny_data, tmp_path):
    seen: set[str] = set()

    def flaky(messages):
        text = messages[-1]["content"]
        if "Explain step by step" in text and "Running Shoes" not in text:
            return THOUGHT_ANSWER
        if "Explain step by step" in text:
            if "running" not in seen:  # the first time: the line fails in the batch (a 500)
                seen.add("running")
                return Answer.error(500, "overloaded")
            return THOUGHT_ANSWER
        return answer(messages)

    store = tmp_path / "kn"
    with FakeTeacherServer(flaky) as server:
        summary = distill([], config(tiny_data, store, server, ["thoughts"]), progress=False)
        assert list(server.batches) == ["batch_1"]
        assert server.batches["batch_1"]["request_counts"]["failed"] == 1
        # The failed line went out once more, synchronously; everything else came by the batch.
        assert len(server.requests) == 1 and "Running Shoes" in server.requests[0].messages[-1]["content"]
        t = summary.teacher
        assert (t["calls_made"], t["batch"]["line_errors"], summary.kinds["thoughts"].records) == (1, 1, 9)


def test_a_line_the_endpoint_rejects_fails_its_session_as_in_sync_mode(tiny_data, tmp_path):
    def rejecting(messages):
        if "Explain step by step" in messages[-1]["content"] and "Running Shoes" in messages[-1]["content"]:
            return Answer.error(400, "prompt too long")
        return answer(messages)

    with FakeTeacherServer(rejecting) as server:
        summary = distill([], config(tiny_data, tmp_path / "kn", server, ["thoughts"]), progress=False)
    rejected = [r for r in KnowledgeStore(tmp_path / "kn").records("thoughts", status="failed")
                if r.reason.startswith("teacher rejected the request")]
    assert [r.session_id for r in rejected] == ["5"] and "prompt too long" in rejected[0].reason
    assert len(server.requests) == 1  # asked once more, synchronously, and rejected again
    assert summary.kinds["thoughts"].records == 9


def test_a_distillation_killed_while_polling_resumes_the_same_batch(tiny_data, tmp_path):
    """SIGKILL while the batch runs: the rerun polls the batch id the store kept, creates none,
    and stores its answers."""
    store = tmp_path / "kn"
    with FakeTeacherServer(answer, batch_polls=10**9) as server:
        path = tmp_path / "distill.yaml"
        path.write_text(yaml.safe_dump(config(tiny_data, store, server, ["thoughts"])), encoding="utf-8")
        proc = subprocess.Popen([sys.executable, "-m", "recbole_bundlellm.commands.cli", "distill", "-c", str(path),
                                 "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.time() + 60
            while time.time() < deadline and server.polls.get("batch_1", 0) < 3 and proc.poll() is None:
                time.sleep(0.02)
            assert proc.poll() is None, f"distill ended before the kill: {proc.stdout.read()}"
            os.kill(proc.pid, signal.SIGKILL)  # a real kill while polling
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        jobs = list(batch_jobs(KnowledgeStore(store).batch_events()).values())
        assert [(job.batch_id, job.state) for job in jobs] == [("batch_1", "created")]
        from recbole_bundlellm.knowledge.inspect import overview

        assert "batch batch_1 (created, 9 requests) is still open" in overview(KnowledgeStore(store))
        assert KnowledgeStore(store).calls() == []
        polls_before = server.polls["batch_1"]
        server.batch_polls = 0  # the endpoint finishes it now
        summary = distill([], config(tiny_data, store, server, ["thoughts"]), progress=False)
        assert list(server.batches) == ["batch_1"] and server.polls["batch_1"] > polls_before  # no second batch
        assert server.requests == [] and len(server.batch_requests) == 9  # each line answered (and paid) once
        t = summary.teacher["batch"]
        assert (t["batches_created"], t["batches_resumed"], t["calls"]) == (0, 1, 9)
        assert summary.kinds["thoughts"].records == 9 and summary.kinds["thoughts"].new == 9
        assert [job.state for job in batch_jobs(KnowledgeStore(store).batch_events()).values()] == ["done"]


def test_a_batch_created_but_not_logged_is_found_by_its_input_file(tmp_path):
    """Killed between creating the batch and logging its id: the rerun finds the batch made of its
    input file among the endpoint's batches instead of creating (and paying for) another; a batch
    never created is dropped (nothing was paid) and its calls are left to the next batch."""
    from recbole_bundlellm.teacher.batch import BatchRunner, ENDPOINT
    from recbole_bundlellm.teacher.client import TeacherClient

    store = KnowledgeStore(tmp_path / "kn")
    with FakeTeacherServer(answer, batch_polls=1) as server, store.writer():
        client = TeacherClient(TeacherSettings(**server.config(mode="batch", batch_poll_interval=0.01)), store)
        created = client.prepare([{"role": "user", "content": "Name one colour."}])
        never = client.prepare([{"role": "user", "content": "Name one shape."}])
        job = BatchRunner(client, store).submit([created])  # written and uploaded
        BatchRunner(client, store).submit([never])
        # What the killed run did and could not log: create the batch of the first file.
        batch = client.api.batches.create(input_file_id=job.input_file_id, endpoint=ENDPOINT, completion_window="24h")
        resumed = [BatchRunner(client, store).finish(j, resumed=True) for j in BatchRunner(client, store).open_jobs()]
    assert list(server.batches) == [batch.id] and client.stats.batches_created == 0
    assert resumed[0] is not None and resumed[0].stored == {created.key} and resumed[1] is None
    assert store.get_call(created.key) is not None and store.get_call(never.key) is None
    assert [j.status for j in batch_jobs(store.batch_events()).values()] == ["completed", "abandoned"]


def test_batch_mode_stops_at_once_on_refused_credentials(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with FakeTeacherServer(answer, api_key="sk-right") as server:
        with pytest.raises(DistillError, match="refused the credentials"):
            distill([], config(tiny_data, tmp_path / "kn", server, ["thoughts"], max_retries=5), progress=False)
        assert server.files == {} and server.batches == {} and server.requests == []


def test_a_poll_interval_must_be_positive():
    with pytest.raises(SettingsError, match="batch_poll_interval must be a number > 0"):
        load_settings(TeacherSettings, {"batch_poll_interval": 0}, "teacher")
