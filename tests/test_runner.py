"""End to end through RecBole: Config → Dataset → DataLoader → model → trainer → Evaluator."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from recbole_bundlellm.evaluation.bundle_metrics import compute_bundle_metrics
from recbole_bundlellm.data import PreparedDataMissing
from recbole_bundlellm.commands.runner import run

KEYS = {  # RecBole result key -> compute_bundle_metrics key
    "bundleprecision": "bundle_precision", "bundlerecall": "bundle_recall",
    "bundlecoverage": "bundle_coverage", "bundleprecisionstrict": "bundle_precision_strict",
    "bundlerecallstrict": "bundle_recall_strict", "failurerate": "failure_rate",
    "wholesessionshare": "whole_session_share", "predictedbundles": "predicted_bundles",
    "truebundles": "true_bundles",
    "distinctrecall": "distinct_recall", "exactprecision": "exact_precision",
    "exactrecall": "exact_recall", "exactf1": "exact_f1", "bestjaccard": "best_jaccard",
}


def _predictions(result):
    lines = (result.output_dir / "predictions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _assert_metrics_match_predictions(result):
    """RecBole's Evaluator must report what the written predictions score."""
    records = _predictions(result)
    recomputed = compute_bundle_metrics(
        [None if r["predicted_bundles"] is None else [frozenset(b) for b in r["predicted_bundles"]] for r in records],
        [[frozenset(b) for b in r["ground_truth"]] for r in records],
        [frozenset(r["items"]) for r in records],
    )
    assert set(result.test_result) == set(KEYS)
    for ours, theirs in KEYS.items():
        assert result.test_result[ours] == pytest.approx(recomputed[theirs], abs=1e-4), ours
    return records


def test_freq_runs_through_recbole_and_writes_its_outputs(tiny_data):
    result = run("Freq", "clothing", config_dict={"data_path": str(tiny_data)})
    for name in ("config.yaml", "metrics.json", "predictions.jsonl", "run.log"):
        assert (result.output_dir / name).is_file(), name
    records = _assert_metrics_match_predictions(result)
    test_ids = {line.split("\t")[0] for line in (tiny_data / "clothing" / "clothing.test.inter").read_text().splitlines()[1:]}
    assert {r["session_id"] for r in records} == test_ids
    # Freq learns category pairs from the training bundles and finds at least one in test
    assert any(r["predicted_bundles"] for r in records)
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    assert metrics["test"] == result.test_result and metrics["timing"]["eval_sessions"] == len(records)


@pytest.mark.parametrize("rule", ["whole_session", "first_two", "adjacent_pairs", "random_pairs"])
def test_floors_run_and_score_consistently(tiny_data, rule):
    result = run("Floor", "clothing", config_dict={"data_path": str(tiny_data), "floor_rule": rule,
                                                    "run_name": rule})
    records = _assert_metrics_match_predictions(result)
    if rule == "whole_session":
        assert all(sorted(r["predicted_bundles"][0]) == sorted(r["items"]) for r in records)
        assert result.test_result["bundlecoverage"] == pytest.approx(1.0)
        # Every session of >= 2 items answered as itself: the trainer passed the session items.
        assert result.test_result["wholesessionshare"] == pytest.approx(1 - result.test_result["failurerate"])


def test_eval_max_sessions_cuts_the_split(tiny_data):
    result = run("Floor", "clothing", config_dict={"data_path": str(tiny_data), "eval_max_sessions": 1})
    assert len(_predictions(result)) == 1


def test_bundlellm_with_a_tiny_random_llama(tiny_data, tiny_llm_path):
    for mode in ("zero_shot", "one_shot"):
        result = run("BundleLLM", "clothing", config_dict={
            "data_path": str(tiny_data), "llm_model": str(tiny_llm_path), "prompt_mode": mode,
            "max_new_tokens": 8, "run_name": mode})
        records = _assert_metrics_match_predictions(result)
        assert all(isinstance(r["raw_text"], str) for r in records)
        assert result.info["device"] == "cpu" and result.info["dtype"] == "float32"
        if mode == "one_shot":
            assert all(r["example_sessions"] for r in records)


@pytest.mark.parametrize("model,extra", [
    ("BPR", {}),
    ("SASRec", {"train_neg_sample_args": None, "loss_type": "CE", "n_layers": 1, "hidden_size": 8,
                "inner_size": 16}),
])
def test_recbole_models_run_on_the_next_item_view(tiny_data, model, extra):
    result = run(model, "clothing_next", config_dict={"data_path": str(tiny_data), "epochs": 1,
                                                       "train_batch_size": 16, **extra})
    assert {"recall@10", "ndcg@10"} <= set(result.test_result)
    assert 0.0 <= result.test_result["recall@10"] <= 1.0
    assert (result.output_dir / "metrics.json").is_file()


def test_missing_prepared_data_is_a_clear_error(tmp_path):
    with pytest.raises(PreparedDataMissing, match="bundlellm data prepare"):
        run("Freq", "clothing", config_dict={"data_path": str(tmp_path / "nowhere")})


@pytest.mark.slow
def test_bundlellm_with_the_real_embedded_model_on_electronic(electronic_data):
    results = {}
    for mode in ("zero_shot", "one_shot"):
        results[mode] = run("BundleLLM", "electronic", config_dict={
            "data_path": str(electronic_data), "prompt_mode": mode, "eval_max_sessions": 4,
            "max_new_tokens": 64, "run_name": mode})
        records = _assert_metrics_match_predictions(results[mode])
        assert len(records) == 4
        assert all(r["raw_text"].strip() for r in records)  # the real model writes something
    assert results["zero_shot"].info["source"] == "embedded"


# --------------------------------------------------------------------------- output folders


def _run_floor(tiny_data, out, **extra):
    return run("Floor", "clothing", config_dict={"data_path": str(tiny_data), **extra}, output_dir=out)


def _siblings(out):
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name)


def _fail_evaluation(monkeypatch, error):
    from recbole_bundlellm.training.trainer import BundleTrainer

    def failing(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(BundleTrainer, "evaluate", failing)


def test_a_rerun_replaces_the_previous_folder_whole(tiny_data, tmp_path):
    out = tmp_path / "runs" / "same"
    _run_floor(tiny_data, out)
    assert (out / "predictions.jsonl").is_file()
    # A next-item model writes no predictions: none of the bundle run's may stay beside its metrics.
    result = run("BPR", "clothing_next", config_dict={"data_path": str(tiny_data), "epochs": 1}, output_dir=out)
    assert result.output_dir == out.resolve()
    assert not (out / "predictions.jsonl").exists()
    assert json.loads((out / "metrics.json").read_text())["model"] == "BPR"
    assert "BPR" in (out / "config.yaml").read_text() and list((out / "checkpoints").iterdir())
    assert _siblings(out) == []  # no partial or old folder left beside it


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_failed_run_keeps_the_previous_outputs_untouched(tiny_data, tmp_path, monkeypatch, error):
    out = tmp_path / "runs" / "same"
    _run_floor(tiny_data, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _fail_evaluation(monkeypatch, error)
    with pytest.raises(type(error)):
        _run_floor(tiny_data, out, floor_rule="first_two")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # run.log included
    assert _siblings(out) == []


def test_a_failed_first_run_leaves_no_folder(tiny_data, tmp_path, monkeypatch):
    _fail_evaluation(monkeypatch, RuntimeError("boom"))
    with pytest.raises(RuntimeError):
        _run_floor(tiny_data, tmp_path / "new" / "deeper" / "out")
    assert not (tmp_path / "new").exists()


def test_the_partial_folder_of_a_killed_run_is_swept(tiny_data, tmp_path):
    import subprocess

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    out = tmp_path / "out"
    stale = tmp_path / f"out.partial-{int(dead.stdout)}"
    stale.mkdir()
    (stale / "run.log").write_text("killed half-way")
    _run_floor(tiny_data, out)
    assert not stale.exists() and (out / "metrics.json").is_file()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_partial_folder_of_a_killed_but_unreaped_run_is_swept(tmp_path):
    # A run killed with its parent stays a zombie until init reaps it, which a container's PID 1
    # may never do: kill(pid, 0) still succeeds, yet nothing will finish that folder.
    import subprocess

    from recbole_bundlellm.commands.runner import staged_folder

    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        for _ in range(500):  # not waited for: it stays a zombie once it exits
            if Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
            time.sleep(0.01)
        stale = tmp_path / f"out.partial-{zombie.pid}"
        stale.mkdir()
        with staged_folder(tmp_path / "out") as stage:
            (stage / "metrics.json").write_text("{}")
        assert not stale.exists() and (tmp_path / "out" / "metrics.json").is_file()
    finally:
        zombie.wait()


def test_an_empty_existing_output_folder_is_used(tiny_data, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert (_run_floor(tiny_data, out).output_dir / "metrics.json").is_file()


# --------------------------------------------------------------------------- what a run records


def test_truncated_prompts_are_counted_in_metrics(tiny_data, tiny_llm_path):
    result = run("BundleLLM", "clothing", config_dict={
        "data_path": str(tiny_data), "llm_model": str(tiny_llm_path), "max_new_tokens": 4,
        "max_prompt_tokens": 8})
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    sessions = metrics["timing"]["eval_sessions"]
    assert metrics["info"]["generation"]["truncated_prompts"] == sessions == result.info["generation"]["prompts"]
    assert metrics["info"]["max_prompt_tokens"] == 8


def test_no_secret_is_written_to_config_or_command(tiny_data, monkeypatch):
    monkeypatch.setattr("sys.argv", ["bundlellm", "run", "--model", "Freq", "--hf_token=abc123",
                                     "--thoughts={password: hunter2, model: x}", "--max_tokens_seen=5"])
    result = run("Freq", "clothing", config_dict={
        "data_path": str(tiny_data), "teacher": {"base_url": "http://me:hunter2@proxy:8080/v1"}})
    written = (result.output_dir / "config.yaml").read_text() + (result.output_dir / "metrics.json").read_text()
    assert "hunter2" not in written and "abc123" not in written
    command = json.loads((result.output_dir / "metrics.json").read_text())["command"]
    assert "--hf_token=<redacted>" in command and "--max_tokens_seen=5" in command and "model: x" in command
    assert "proxy:8080" in written  # only the credentials go


@pytest.mark.parametrize("name", ["../electronic/PW", "../../x", "/some/abs/path", "..", "a\\b"])
def test_a_run_name_is_a_name_never_a_path(tiny_data, tmp_path, capsys, name):
    from recbole_bundlellm import cli

    other = tmp_path / "outputs" / "electronic" / "PW"
    other.mkdir(parents=True)
    (other / "metrics.json").write_text("{}")  # another model's finished run
    code = cli.main(["run", "--model=Floor", "--dataset=clothing", f"--data_path={tiny_data}", f"--run_name={name}"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: run_name") and "is a name, not a path" in err
    assert (other / "metrics.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]  # nothing written anywhere else
