"""`bundlellm benchmark`: grids of methods x datasets x seeds, reused cells, a killed grid, the
paired significance test, tables and plots. Freq and the floors only (no LLM), on the tiny data;
each cell runs in its own process (a few seconds each)."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recbole_bundlellm.commands.benchmark.cells import plan
from recbole_bundlellm.commands.benchmark.executor import run_benchmark
from recbole_bundlellm.commands.benchmark.plots import plot_sampling
from recbole_bundlellm.commands.benchmark.rows import Row, read_predictions
from recbole_bundlellm.commands.benchmark.spec import BenchmarkError, load_benchmark
from recbole_bundlellm.commands.cli import main
from recbole_bundlellm.evaluation.significance import holm_adjust, paired_permutation_test

REPO = Path(__file__).resolve().parents[1]


def _grid(tmp_path: Path, tiny_data: Path, seeds=(0, 1), name: str = "grid") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""
datasets: [clothing]
seeds: {list(seeds)}
overrides: {{data_path: {tiny_data}}}
methods:
  - {{name: Freq, model: Freq}}
  - {{name: "floor:whole_session", model: Floor, floor_rule: whole_session}}
""")
    return path


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _finished(cells_dir: Path) -> dict[str, int]:
    """Finished cell folders -> their metrics.json's modification time (ns)."""
    return {p.name: (p / "metrics.json").stat().st_mtime_ns for p in cells_dir.iterdir()
            if p.is_dir() and (p / "metrics.json").is_file()}


def test_a_grid_writes_tables_and_plots_reuses_its_cells_and_runs_only_new_seeds(tiny_data, tmp_path):
    path = _grid(tmp_path, tiny_data)
    first = run_benchmark(load_benchmark(path, output_dir=tmp_path / "out"), progress=False)
    assert len(first.ran) == 4 and not first.reused
    out = tmp_path / "out"
    for name in ("results.csv", "results.md", "cells.csv", "plots/bars_exact_f1.png", "plots/quality_vs_cost.png"):
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0, name

    rows = {r["method"]: r for r in _csv(out / "results.csv")}
    assert set(rows) == {"Freq", "floor:whole_session"} and rows["Freq"]["seeds"] == "0 1"
    # the row's mean is the mean of its cells' own metrics.json
    cells = [c for c in first.cells if c.method == "Freq"]
    f1 = [json.loads((c.folder / "metrics.json").read_text())["test"]["exactf1"] for c in cells]
    assert float(rows["Freq"]["exact_f1_mean"]) == pytest.approx(sum(f1) / len(f1), abs=1e-6)
    for key in ("whole_session_share_mean", "predicted_bundles_mean", "true_bundles_mean", "failure_rate_mean",
                "bundle_precision_strict_mean", "seconds_per_session_mean", "peak_rss_mb_max", "train_seconds_mean"):
        assert rows["Freq"][key] != "", key
    assert float(rows["Freq"]["peak_rss_mb_max"]) > 50  # a real process's peak, in MiB
    # the whole-session floor is the default reference; both methods ignore the seed
    assert rows["Freq"]["reference"] == "floor:whole_session" and rows["Freq"]["p_value"] != ""
    assert rows["floor:whole_session"]["same_predictions"] == "true"
    md = (out / "results.md").read_text()
    assert "| clothing | floor:whole_session | 2 (same) |" in md and "| ref |" in md

    again = run_benchmark(load_benchmark(path, output_dir=out), progress=False)
    assert not again.ran and len(again.reused) == 4

    before = _finished(out / "cells")
    extended = run_benchmark(load_benchmark(path, output_dir=out, seeds=[0, 1, 2]), progress=False)
    assert sorted((c.method, c.seed) for c in extended.ran) == [("Freq", 2), ("floor:whole_session", 2)]
    after = _finished(out / "cells")
    assert {k: after[k] for k in before} == before  # the finished cells were not recomputed
    assert _csv(out / "results.csv")[0]["seeds"] == "0 1 2"


def _child_state(pid: int) -> str | None:
    """The process's state letter (Z: a zombie), or None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the cell dies with the grid through prctl (Linux)")
def test_a_killed_grid_leaves_no_half_cell_and_a_rerun_only_runs_the_rest(tiny_data, tmp_path):
    path = _grid(tmp_path, tiny_data, seeds=(0, 1, 2))
    out = tmp_path / "out"
    cells_dir = out / "cells"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "BUNDLELLM_PROGRESS": "0"}
    grid = subprocess.Popen([sys.executable, "-m", "recbole_bundlellm.commands.cli", "benchmark", "-c", str(path),
                             "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill it while a cell is being built (its .partial- folder exists) after at least one finished.
    partial = None
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and grid.poll() is None:
            if cells_dir.is_dir() and _finished(cells_dir):
                partial = next((p for p in cells_dir.iterdir() if ".partial-" in p.name), None)
                if partial is not None:
                    # Freeze the cell first: on a busy machine it could otherwise finish (rename its
                    # folder) between our look and the kill. Stopped, it still dies with the grid.
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(partial.name.rsplit("-", 1)[1]), signal.SIGSTOP)
                    if partial.is_dir():
                        grid.send_signal(signal.SIGKILL)
                        break
                    with contextlib.suppress(ProcessLookupError):  # it finished meanwhile: the next one
                        os.kill(int(partial.name.rsplit("-", 1)[1]), signal.SIGCONT)
                    partial = None
            time.sleep(0.01)
    finally:
        if grid.poll() is None and partial is None:
            grid.kill()
        grid.wait()
    assert partial is not None, "the grid finished (or hung) before it could be killed mid-cell"

    # The running cell's process died with the grid: nobody finishes its cell behind our back.
    pid = int(partial.name.rsplit("-", 1)[1])
    for _ in range(500):
        if _child_state(pid) in (None, "Z"):
            break
        time.sleep(0.01)
    assert _child_state(pid) in (None, "Z")
    assert partial.is_dir()  # killed mid-run: had it finished its run, the folder would have been renamed

    finished = _finished(cells_dir)
    assert 1 <= len(finished) < 6
    for name in finished:  # what looks finished is whole
        for part in ("config.yaml", "metrics.json", "predictions.jsonl", "run.log"):
            assert (cells_dir / name / part).is_file(), (name, part)
    assert all(p.name in finished or ".partial-" in p.name for p in cells_dir.iterdir())

    rerun = run_benchmark(load_benchmark(path, output_dir=out), progress=False)
    assert len(rerun.ran) == 6 - len(finished) and {c.key for c in rerun.reused} == set(finished)
    after = _finished(cells_dir)
    assert len(after) == 6 and {k: after[k] for k in finished} == finished
    assert not [p for p in cells_dir.iterdir() if ".partial-" in p.name or ".old-" in p.name]
    assert len(_csv(out / "cells.csv")) == 6


def test_a_failed_cell_is_reported_after_the_others_are_tabled(tiny_data, tmp_path, monkeypatch):
    from recbole_bundlellm.commands.benchmark import executor as benchmark

    planned = benchmark.plan

    def plan_with_a_broken_cell(spec, host=None):
        cells = planned(spec, host)
        cells[0].overrides["floor_rule"] = "no_such_rule"  # resolves, then fails inside the cell
        return cells

    monkeypatch.setattr(benchmark, "plan", plan_with_a_broken_cell)
    path = tmp_path / "grid.yaml"
    path.write_text(f"datasets: [clothing]\nseeds: [0]\noverrides: {{data_path: {tiny_data}}}\nmethods:\n"
                    "  - {name: broken, model: Floor}\n  - {name: fine, model: Floor, floor_rule: first_two}\n")
    with pytest.raises(BenchmarkError, match=r"1 of 2 cells failed .* broken · clothing · seed 0: ValueError: "
                                             r"floor_rule 'no_such_rule'"):
        run_benchmark(load_benchmark(path, output_dir=tmp_path / "out"), progress=False)
    rows = {r["method"]: r for r in _csv(tmp_path / "out" / "results.csv")}
    assert rows["fine"]["seeds"] == "0" and rows["broken"]["seeds"] == ""
    assert "| clothing | broken | 0/1 |" in (tmp_path / "out" / "results.md").read_text()
    assert [p.name for p in (tmp_path / "out" / "cells").iterdir()] == [_cell_key_of(tmp_path / "out", "fine")]


def _cell_key_of(out: Path, method: str) -> str:
    return next(r["key"] for r in _csv(out / "cells.csv") if r["method"] == method)


def _write_predictions(path: Path, predicted: list[list[list[int]] | None]) -> Path:
    with open(path, "w") as f:
        for i, bundles in enumerate(predicted):
            record = {"session_id": f"s{i:02d}", "items": [1, 2, 3, 4], "predicted_bundles": bundles,
                      "ground_truth": [[1, 2], [3, 4]]}
            f.write(json.dumps(record) + "\n")
    return path


def test_the_paired_test_on_hand_made_predictions_points_the_right_way(tmp_path):
    n = 24
    right = [[1, 2], [3, 4]]
    whole = [[1, 2, 3, 4]]
    good, _ = read_predictions(_write_predictions(tmp_path / "good.jsonl", [right] * (n - 2) + [whole] * 2))
    ref, _ = read_predictions(_write_predictions(tmp_path / "ref.jsonl", [whole] * n))
    slight, _ = read_predictions(_write_predictions(tmp_path / "slight.jsonl", [right] * 2 + [whole] * (n - 2)))
    sessions = sorted(ref)
    better = paired_permutation_test([good[s] for s in sessions], [ref[s] for s in sessions])
    assert better.mean_difference > 0.9 and better.p_value < 0.001 and not better.exact
    worse = paired_permutation_test([ref[s] for s in sessions], [good[s] for s in sessions])
    assert worse.mean_difference < 0 and worse.p_value == pytest.approx(better.p_value, abs=0.002)
    weak = paired_permutation_test([slight[s] for s in sessions], [ref[s] for s in sessions])
    assert weak.mean_difference > 0 and weak.p_value > 0.2  # 2 sessions of 24: no evidence
    same = paired_permutation_test([ref[s] for s in sessions], [ref[s] for s in sessions])
    assert same.p_value == 1.0 and same.mean_difference == 0.0
    # small samples are enumerated: 5 sessions all better is 2 sign patterns of 32 as extreme
    exact = paired_permutation_test([1.0] * 5, [0.0] * 5)
    assert exact.exact and exact.p_value == pytest.approx(2 / 32)


def test_holm_adjustment():
    adjusted = holm_adjust([0.01, 0.04, math.nan, 0.03])
    assert adjusted[0] == pytest.approx(0.03) and adjusted[1] == pytest.approx(0.06)
    assert math.isnan(adjusted[2]) and adjusted[3] == pytest.approx(0.06)


def test_the_sampling_plot_draws_a_line_per_sampler(tmp_path):
    rows = []
    for sampler in ("random", "diversity"):
        for ratio, value in ((0.1, 0.2), (0.3, 0.25), (0.5, 0.3)):
            row = Row("electronic", f"{sampler}_r{ratio}", {"model": "BundleSFT", "adaptation": "sft",
                                                           "sampling": {"sampler": sampler, "ratio": ratio}}, [0], [])
            row.mean["exact_f1"], row.std["exact_f1"] = value, 0.01
            rows.append(row)
    path = tmp_path / "sampling.png"
    assert plot_sampling(rows, "exact_f1", path) and path.read_bytes().startswith(b"\x89PNG")
    assert not plot_sampling([Row("electronic", "Freq", {"model": "Freq"}, [0], [])], "exact_f1", tmp_path / "no.png")


def test_the_shipped_benchmarks_parse(monkeypatch):
    monkeypatch.chdir(REPO)  # their files name configs/... from the repository root
    baselines = load_benchmark("configs/benchmarks/baselines.yaml")
    assert [m.name for m in baselines.methods][:2] == ["Freq", "Pairwise"] and len(baselines.methods) == 10
    assert baselines.datasets == ("electronic", "clothing", "food") and baselines.seeds == (0, 1, 2)
    fmt = load_benchmark("configs/benchmarks/format_study.yaml")
    assert len(fmt.methods) == 13 and fmt.reference == "format-raw_icl"
    quantity = load_benchmark("configs/benchmarks/quantity_study.yaml")
    assert len(quantity.methods) == 33


def test_seed_keys_are_the_models_own(tiny_data, tmp_path):
    path = _grid(tmp_path, tiny_data, seeds=(3,))
    cells = {c.method: c for c in plan(load_benchmark(path, output_dir=tmp_path / "out"))}
    assert cells["Freq"].overrides["seed"] == 3 and "floor_seed" not in cells["Freq"].overrides
    assert cells["floor:whole_session"].overrides["floor_seed"] == 3
    # a key of the resolved configuration changes the cell; where it is written does not
    other = plan(load_benchmark(path, {"freq_min_support": 0.01, "run_name": "x"}, output_dir=tmp_path / "o2"))
    keys = {c.method: c.key for c in other}
    assert keys["Freq"] != cells["Freq"].key and keys["floor:whole_session"] == cells["floor:whole_session"].key


def test_benchmark_file_errors_are_one_line(tiny_data, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"datasets: [clothing]\noverrides: {{data_path: {tiny_data}}}\nreference: flor\n"
                   "methods:\n  - {name: floor, model: Floor}\n")
    assert main(["benchmark", "-c", str(bad), "--plan"]) == 2
    assert capsys.readouterr().err.strip() == "error: reference 'flor' is not one of the methods; did you mean 'floor'?"
    bad.write_text(f"datasets: [clothing]\noverrides: {{data_path: {tiny_data}}}\n"
                   "methods:\n  - {name: floor, model: Floor, floor_rul: first_two}\n")
    assert main(["benchmark", "-c", str(bad), "--plan"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: method 'floor' on clothing: unknown config key 'floor_rul'") and "\n" not in err
    with pytest.raises(BenchmarkError, match="share a name"):
        bad.write_text("datasets: [clothing]\nmethods:\n  - {model: Floor}\n  - {model: Floor}\n")
        load_benchmark(bad)
    assert main(["benchmark", "-c", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_the_command_plans_and_says_what_ctrl_c_keeps(tiny_data, tmp_path, monkeypatch, capsys):
    path = _grid(tmp_path, tiny_data, seeds=(0,))
    assert main(["benchmark", "-c", str(path), "--out", str(tmp_path / "out"), "--plan", "--seeds=0,1"]) == 0
    out = capsys.readouterr().out
    assert out.count("to run ") == 4 and "4 cells, 4 to run" in out

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("recbole_bundlellm.commands.benchmark.executor.run_benchmark", interrupted)
    assert main(["benchmark", "-c", str(path)]) == 130
    assert capsys.readouterr().err.strip() == ("error: interrupted; finished cells are kept; run the same command "
                                               "again to run only the others")


def test_costs_follow_the_recorded_conventions():
    from recbole_bundlellm.commands.benchmark.rows import _costs

    timing = {"fit_seconds": 2.0, "tune_seconds": 1.0, "total_seconds": 9.0, "eval_seconds": 5.0,
              "seconds_per_session": 0.05}
    costs = _costs(timing, {}, {"peak_rss_mb": 400.0, "wall_seconds": 12.0})
    assert costs["train_seconds"] == 3.0 and costs["peak_rss_mb"] == 400.0 and costs["teacher_calls"] is None
    info = {"parameters": {"trainable": 1024, "total": 10**6},
            "training": {"train_seconds": 100.0, "valid_seconds": 20.0, "reused_adapter": "x"},
            "teacher": {"calls": 7, "usage": {"prompt_tokens": 300, "completion_tokens": 50}}}
    costs = _costs(timing, info, {})
    assert costs["train_seconds"] == 120.0 and costs["trainable_parameters"] == 1024
    assert costs["teacher_calls"] == 7 and costs["teacher_tokens"] == 350 and costs["peak_rss_mb"] is None
    assert _costs({"total_seconds": 9.0, "eval_seconds": 5.0}, {}, {})["train_seconds"] == 4.0  # RecBole's own


@pytest.mark.parametrize("name", ["baselines", "student", "student_orderings", "student_routing"])
def test_the_readme_table_is_the_committed_benchmark(name):
    from recbole_bundlellm.commands.benchmark.tables import readme_block

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    begin, end = f"<!-- {name}-table:begin -->", f"<!-- {name}-table:end -->"
    shown = readme[readme.index(begin) + len(begin):readme.index(end)].strip()
    committed = readme_block((REPO / f"benchmarks/results/{name}.csv").read_text(encoding="utf-8"),
                             (REPO / f"benchmarks/results/{name}.md").read_text(encoding="utf-8"))
    assert shown == committed.strip()  # after a new run: python benchmarks/publish_benchmark.py --name NAME
    assert "- command: `bundlellm benchmark" in shown and "floor:whole_session" in shown


def test_a_benchmark_never_overwrites_tables_it_did_not_write(tmp_path, tiny_data):
    path = tmp_path / "grid.yaml"
    path.write_text(f"datasets: [clothing]\nseeds: [0]\noverrides: {{data_path: {tiny_data}}}\nmethods:\n"
                    "  - {name: fine, model: Floor, floor_rule: first_two}\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.csv").write_text("my own numbers\n")
    with pytest.raises(BenchmarkError, match=r"holds results.csv that `bundlellm benchmark` did not write"):
        run_benchmark(load_benchmark(path, output_dir=mine), progress=False)
    assert (mine / "results.csv").read_text() == "my own numbers\n" and not (mine / "cells").exists()
    ours = tmp_path / "ours"
    run_benchmark(load_benchmark(path, output_dir=ours), progress=False)
    run_benchmark(load_benchmark(path, output_dir=ours), progress=False)  # its own tables: rewritten


@pytest.mark.parametrize("name", ["../../x", "a/b", ".."])
def test_a_benchmark_name_is_a_name_never_a_path(tmp_path, tiny_data, name):
    path = tmp_path / "grid.yaml"
    path.write_text(f"name: {json.dumps(name)}\ndatasets: [clothing]\nmethods:\n  - {{model: Floor}}\n")
    with pytest.raises(BenchmarkError, match="is a name, not a path"):
        load_benchmark(path)


def test_a_cell_is_keyed_by_the_contents_of_the_model_it_reads(tmp_path, tiny_data, tiny_llm_path):
    import shutil

    llm = tmp_path / "llm"
    shutil.copytree(tiny_llm_path, llm)
    path = tmp_path / "grid.yaml"
    path.write_text(f"datasets: [clothing]\nseeds: [0]\noverrides: {{data_path: {tiny_data}, llm_model: {llm}}}\n"
                    "methods:\n  - {name: student, model: BundleLLM}\n  - {name: floor, model: Floor}\n")

    def keys() -> dict[str, str]:
        return {c.method: c.key for c in plan(load_benchmark(path, output_dir=tmp_path / "out"))}

    before = keys()
    assert before == keys()  # stable
    weights = next(llm.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the same size and header: changed in place
    weights.write_bytes(bytes(data))
    after = keys()
    assert after["student"] != before["student"]  # the model changed: the cell runs again
    assert after["floor"] == before["floor"]  # a model that reads no LLM keeps its cell


def test_opt_in_settings_at_their_neutral_value_leave_cell_keys_as_they_were(tiny_data, tiny_llm_path, monkeypatch):
    """A new opt-in setting (gradient checkpointing, an attention kernel, a 4-bit base) at the value
    that reproduces the old behaviour does not make every finished cell new; set, it does."""
    from recbole_bundlellm.commands.benchmark import cells
    from recbole_bundlellm.config import BundleConfig

    def key(**overrides):
        return cells.cell_key(BundleConfig("BundleSFT", "clothing", [], {
            "data_path": str(tiny_data), "llm_model": str(tiny_llm_path), **overrides}))

    default = key()
    assert key(gradient_checkpointing=False, attn_implementation=None, load_in_4bit=False) == default
    assert key(attn_implementation="eager") != default
    monkeypatch.setattr(cells, "NEUTRAL_VALUES", {})
    assert key() != default  # the neutral values are what was left out
