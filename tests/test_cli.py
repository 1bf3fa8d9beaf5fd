"""The bundlellm command: user errors are one clear line, runs print a table."""

from __future__ import annotations

import json

from conftest import FIXTURES
from recbole_bundlellm.commands.cli import main


def test_data_prepare_then_compare_prints_one_table(tmp_path, capsys):
    assert main(["data", "prepare", "--raw", str(FIXTURES / "tiny_raw"), "--out", str(tmp_path / "d"),
                 "--domain", "clothing", "--seed", "0"]) == 0
    assert "clothing: prepared" in capsys.readouterr().out
    cfg = tmp_path / "freq.yaml"
    cfg.write_text(f"model: Freq\ndataset: clothing\ndata_path: {tmp_path / 'd'}\n")
    assert main(["compare", str(cfg), "--floors", "--out", str(tmp_path / "table")]) == 0
    out = capsys.readouterr().out
    assert "exact F1" in out and "floor:random_pairs" in out and "Freq" in out
    rows = json.loads((tmp_path / "table.json").read_text())
    assert [r["run_name"] for r in rows] == ["Freq", "floor:whole_session", "floor:first_two",
                                            "floor:adjacent_pairs", "floor:random_pairs"]
    assert (tmp_path / "table.md").read_text().startswith("model")


def test_run_accepts_recbole_style_overrides(tiny_data, capsys):
    assert main(["run", "--model", "Floor", "--dataset", "clothing", f"--data_path={tiny_data}",
                 "--floor_rule=first_two", "--eval_max_sessions=1"]) == 0
    out = capsys.readouterr().out
    assert "1 sessions" in out and "outputs:" in out


def test_unknown_key_is_one_clear_line(tiny_data, capsys):
    code = main(["run", "--model", "Freq", "--dataset", "clothing", f"--data_path={tiny_data}",
                 "--freq_min_suport=0.1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == ("error: unknown config key 'freq_min_suport' in the config overrides; "
                           "did you mean 'freq_min_support'?")


def test_unknown_model_and_missing_data_are_clear_errors(tmp_path, capsys):
    assert main(["run", "--model", "Frek", "--dataset", "clothing"]) == 2
    assert "unknown model 'Frek'" in capsys.readouterr().err
    assert main(["run", "--model", "Freq", "--dataset", "clothing", f"--data_path={tmp_path}"]) == 2
    assert "bundlellm data prepare" in capsys.readouterr().err


def test_models_lists_ours(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "Freq" in out and "BundleLLM" in out and "Floor" in out


def test_compare_warns_when_rows_score_different_sessions(tiny_data, tmp_path, capsys):
    cfg = tmp_path / "one.yaml"
    cfg.write_text(f"model: Floor\ndataset: clothing\ndata_path: {tiny_data}\neval_max_sessions: 1\nrun_name: one\n")
    assert main(["compare", str(cfg), "--floors"]) == 0
    assert "scored different numbers of sessions" in capsys.readouterr().err
    assert main(["compare", str(cfg), "--floors", "--eval_max_sessions=1"]) == 0
    assert "different numbers" not in capsys.readouterr().err


def test_teacher_serve_refuses_a_missing_model_with_one_line(tmp_path, capsys):
    code = main(["teacher", "serve", "--model", str(tmp_path / "missing.gguf"), "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "missing.gguf" in err and len(err.strip().splitlines()) == 1


def test_knowledge_and_plugins_commands_reject_stray_arguments(capsys):
    for argv in (["plugins", "--oops=1"], ["knowledge", "show", "--nope"]):
        try:
            main(argv)
        except SystemExit as exc:  # argparse's own usage error
            assert exc.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err


def test_prepare_offers_exactly_the_registered_category_predictors():
    from recbole_bundlellm.commands.cli import build_parser
    from recbole_bundlellm.data import CATEGORY_PREDICTORS, DEFAULT_CATEGORY_PREDICTOR

    parser = build_parser()
    prepare = parser._subparsers._group_actions[0].choices["data"]._subparsers._group_actions[0].choices["prepare"]
    option = next(a for a in prepare._actions if a.dest == "category_predictor")
    assert set(option.choices) == set(CATEGORY_PREDICTORS) and option.default == DEFAULT_CATEGORY_PREDICTOR


def test_truncated_prompts_are_a_warning_line_on_the_console(tiny_data, tiny_llm_path, capsys):
    assert main(["run", "--model", "BundleLLM", "--dataset", "clothing", f"--data_path={tiny_data}",
                 f"--llm_model={tiny_llm_path}", "--max_new_tokens=4", "--max_prompt_tokens=8"]) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if "max_prompt_tokens" in line]
    assert len(warning) == 1 and warning[0].startswith("warning: BundleLLM: 2 of 2 prompts"), err
    assert main(["run", "--model", "BundleLLM", "--dataset", "clothing", f"--data_path={tiny_data}",
                 f"--llm_model={tiny_llm_path}", "--max_new_tokens=4"]) == 0
    assert "max_prompt_tokens" not in capsys.readouterr().err


def test_ctrl_c_in_any_command_is_one_line_and_exit_130(monkeypatch, capsys):
    import recbole_bundlellm.commands.distill

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recbole_bundlellm.commands.distill, "distill", interrupted)
    assert main(["distill", "--dataset", "clothing"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("error: interrupted") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "again to resume" in err
    monkeypatch.setattr("recbole_bundlellm.commands.cli._models", interrupted)
    assert main(["models"]) == 130
    assert capsys.readouterr().err.strip() == "error: interrupted"

    def interrupted_saying_what_is_kept(*args, **kwargs):
        raise KeyboardInterrupt("interrupted: the store keeps the 3 records this run finished")

    monkeypatch.setattr(recbole_bundlellm.commands.distill, "distill", interrupted_saying_what_is_kept)
    assert main(["distill", "--dataset", "clothing"]) == 130
    assert capsys.readouterr().err == "error: interrupted: the store keeps the 3 records this run finished\n"


def test_compare_refuses_one_run_name_twice_before_running_anything(tiny_data, tmp_path, capsys):
    cfg = tmp_path / "one.yaml"
    cfg.write_text(f"model: Floor\ndataset: clothing\ndata_path: {tiny_data}\n")
    assert main(["compare", str(cfg), str(cfg)]) == 2
    assert "run_name 'Floor'" in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists()
    other = tmp_path / "two.yaml"
    other.write_text(f"model: Floor\ndataset: clothing\ndata_path: {tiny_data}\nrun_name: two\nfloor_rule: first_two\n")
    assert main(["compare", str(cfg), str(other), "--eval_max_sessions=1"]) == 0
    # one --run_name override names every run alike
    assert main(["compare", str(cfg), str(other), "--run_name=x"]) == 2
    assert "run_name 'x'" in capsys.readouterr().err
