"""Every user mistake the CLI knows of: one line on stderr (``error: ...``), exit 2, no traceback,
and no output folder left behind.

Each row of :data:`CASES` builds its command line in the test's own folder (``tmp``), with the
prepared tiny dataset (``data``) at hand, and names what the one line must say.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import REPO
from recbole_bundlellm.commands.cli import main

Argv = Callable[[Path, Path], list[str]]


def _file(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def _good(tmp: Path, data: Path, model: str = "Freq") -> str:
    """A valid config of ``model`` on the tiny dataset."""
    return _file(tmp, f"{model.lower()}.yaml", f"model: {model}\ndataset: clothing\ndata_path: {data}\n")


def _run(*extra: str, model: str = "Freq") -> Argv:
    return lambda tmp, data: ["run", "-c", _good(tmp, data, model), *extra]


def _llm(source: Callable[[Path], Path | str]) -> Argv:
    """``run`` BundleLLM with ``llm_model`` set to what ``source`` makes in the test's folder."""
    return lambda tmp, data: ["run", "-c", _good(tmp, data, "BundleLLM"), f"--llm_model={source(tmp)}"]


def _made(tmp: Path, name: str, content: bytes | None) -> Path:
    """A file (``content``) or an empty folder (``None``) named ``name`` in ``tmp``."""
    path = tmp / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    return path


def _folder_with(tmp: Path, name: str, file: str) -> str:
    """A folder ``name`` in ``tmp`` holding one file of the user's, ``file``."""
    folder = _made(tmp, name, None)
    (folder / file).write_text("mine")
    return str(folder)


# (case, command line, what the one line must contain)
CASES: list[tuple[str, Argv, list[str]]] = [
    ("YAML syntax error", lambda tmp, data: ["run", "-c", _file(tmp, "bad.yaml", "model: Freq\ndataset: clothing\n  bad: [\n")],
     ["bad.yaml", "line 3", "column 6"]),
    ("config file that is a list", lambda tmp, data: ["run", "-c", _file(tmp, "list.yaml", "- model: Freq\n")],
     ["list.yaml", "mapping"]),
    ("missing config file (run)", lambda tmp, data: ["run", "-c", str(tmp / "missing.yaml")], ["missing.yaml", "not found"]),
    ("missing config file (distill)", lambda tmp, data: ["distill", "-c", str(tmp / "missing.yaml")],
     ["missing.yaml", "not found"]),
    ("config file that is a folder", lambda tmp, data: ["run", "-c", str(tmp)], ["is a folder", "YAML file"]),
    ("wrong type", _run("--eval_max_sessions=many"), ["eval_max_sessions", "'many'", "integer >= 1", "~"]),
    ("negative eval_max_sessions", _run("--eval_max_sessions=-1"), ["eval_max_sessions", "-1", ">= 1"]),
    ("zero eval_max_sessions", _run("--eval_max_sessions=0"), ["eval_max_sessions", "got 0"]),
    ("negative distill_max_sessions", lambda tmp, data: ["distill", "--dataset", "clothing", f"--data_path={data}",
                                                         "--distill_max_sessions=-1"], ["distill_max_sessions", "-1"]),
    ("negative generation_batch_size", _run("--generation_batch_size=-1", model="BundleLLM"),
     ["generation_batch_size", "-1", ">= 1"]),
    ("zero max_new_tokens", _run("--max_new_tokens=0", model="BundleLLM"), ["max_new_tokens", "0"]),
    ("fractional max_title_words", _run("--max_title_words=1.5", model="BundleLLM"), ["max_title_words", "1.5"]),
    ("boolean max_prompt_tokens", _run("--max_prompt_tokens=true", model="BundleLLM"), ["max_prompt_tokens", "True"]),
    ("top_p above 1", _run("--top_p=1.5", model="BundleLLM"), ["top_p", "1.5", "<= 1"]),
    ("negative floor_seed", _run("--floor_seed=-3", model="Floor"), ["floor_seed", "-3"]),
    ("text floor_seed", _run("--floor_seed=abc", model="Floor"), ["floor_seed", "'abc'", "integer"]),
    ("freq_min_support above 1", _run("--freq_min_support=2"), ["freq_min_support", "2"]),
    ("llm_model: a missing folder", _llm(lambda tmp: tmp / "no_such_model"), ["no_such_model", "not found", "config.json", ".gguf"]),
    ("llm_model: a file that is no model", _llm(lambda tmp: _made(tmp, "notes.txt", b"hello")),
     ["notes.txt", "not a .gguf file", "config.json"]),
    ("llm_model: an empty folder", _llm(lambda tmp: _made(tmp, "empty_model", None)), ["empty_model", "config.json"]),
    ("llm_model: a fake .gguf", _llm(lambda tmp: _made(tmp, "fake.gguf", b"not really a model")),
     ["fake.gguf", "not a GGUF file"]),
    ("temperature 0 while sampling", _run("--do_sample=true", "--temperature=0", model="BundleLLM"),
     ["temperature", "do_sample"]),
    ("bad prompt_mode", _run("--prompt_mode=two_shot", model="BundleLLM"), ["prompt_mode", "two_shot", "one_shot"]),
    ("run --model without a dataset", lambda tmp, data: ["run", "--model", "Freq"], ["no dataset", "--dataset"]),
    ("distill without a dataset", lambda tmp, data: ["distill"], ["no dataset", "--dataset"]),
    ("run without -c", lambda tmp, data: ["run"], ["no model given", "--model"]),
    ("--output-dir is a file", lambda tmp, data: ["run", "-c", _good(tmp, data), "--output-dir", _file(tmp, "taken.txt", "x")],
     ["taken.txt", "is a file"]),
    ("--output-dir holds other files", lambda tmp, data: ["run", "-c", _good(tmp, data), "--output-dir",
                                                          _folder_with(tmp, "mine", "notes.txt")],
     ["--output-dir", "notes.txt", "not a run's"]),
    ("--output-dir is the working directory", lambda tmp, data: ["run", "-c", _good(tmp, data), "--output-dir", "."],
     ["holds the working directory"]),
    ("sampling.ratio out of range", _run("--sampling={ratio: 0.95}"), ["sampling", "ratio", "0.95"]),
    ("unknown teacher setting", _run("--teacher={base_urll: 'http://x/v1'}"), ["teacher.base_urll", "base_url"]),
    ("teacher.api_key", _run("--teacher={api_key: sk-test-123}"), ["teacher.api_key", "OPENAI_API_KEY", "api_key_env"]),
    ("override that is not YAML", _run("--teacher={base_url: ["), ["--teacher", "YAML"]),
    ("stray argument", _run("oops"), ["unrecognized", "oops"]),
    ("compare: two configs with one run_name", lambda tmp, data: [
        "compare", _good(tmp, data), _file(tmp, "floor.yaml", f"model: Floor\ndataset: clothing\ndata_path: {data}\nrun_name: Freq\n")],
     ["run_name 'Freq'", "freq.yaml", "floor.yaml"]),
    ("compare: a run named like a floor", lambda tmp, data: [
        "compare", _file(tmp, "f.yaml", f"model: Floor\ndataset: clothing\ndata_path: {data}\nrun_name: 'floor:first_two'\n"),
        "--floors"], ["floor:first_two", "f.yaml", "--floors"]),
]


def _leftovers(tmp: Path) -> list[str]:
    """Folders a failed command must not leave: outputs/, <out>.partial-<pid>, <out>.old-<pid>."""
    names = [p.name for p in tmp.rglob("*") if p.is_dir()]
    return [n for n in names if n == "outputs" or ".partial-" in n or ".old-" in n]


@pytest.mark.parametrize("case,argv,expected", CASES, ids=[c[0] for c in CASES])
def test_a_user_mistake_is_one_line_and_exit_2(case, argv, expected, tiny_data, tmp_path, capsys):
    args = argv(tmp_path, tiny_data)
    code = main(args)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, (case, err)
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert "sk-test-123" not in err  # a key is never echoed back
    assert not _leftovers(tmp_path)


def _cli(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """The real ``bundlellm`` entry point in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")])}
    return subprocess.run([sys.executable, "-m", "recbole_bundlellm.commands.cli", *args], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_entry_point_prints_one_line_for_a_yaml_error_and_a_missing_file(tmp_path):
    _file(tmp_path, "bad.yaml", "model: Freq\ndataset: [clothing\n")
    for args, names in ((["run", "-c", "bad.yaml"], "bad.yaml"), (["distill", "-c", "gone.yaml"], "gone.yaml")):
        done = _cli(tmp_path, *args)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert names in done.stderr


def test_ctrl_c_is_one_line_exit_130_and_keeps_the_previous_outputs(tiny_data, tmp_path, capsys, monkeypatch):
    from recbole_bundlellm.training.trainer import BundleTrainer

    config = _good(tmp_path, tiny_data)
    out = tmp_path / "out"
    assert main(["run", "-c", config, "--output-dir", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(BundleTrainer, "evaluate", interrupted)
    code = main(["run", "-c", config, "--output-dir", str(out), "--freq_min_support=0.01"])
    err = capsys.readouterr().err
    assert code == 130
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: interrupted"), err
    assert "nothing written" in err and "Traceback" not in err
    # The previous run's folder is whole: its own run.log, metrics and predictions, nothing else.
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not _leftovers(tmp_path)
