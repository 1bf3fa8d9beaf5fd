"""A key the user set that the run's model does not read is an error naming the models that read it
(issue 21: `--model=BundleLLM --adapter_path=...` evaluated the bare model; `Freq --lora_rank=4`
was accepted). Shared overrides (benchmark, compare) reach only the runs that read them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recbole_bundlellm.commands.benchmark.cells import check_grid_keys, plan
from recbole_bundlellm.commands.benchmark.spec import BenchmarkError, load_benchmark
from recbole_bundlellm.commands.cli import main
from recbole_bundlellm.config import (BundleConfig, ConfigKeyError, UnreadKeyError, check_read_keys, keys_read_by,
                                      readers_of)
from recbole_bundlellm.settings import SettingsError
from recbole_bundlellm.testing import plugin_host

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIGS = sorted(p for p in REPO.glob("configs/*/**/*.yaml") if "benchmarks" not in p.parts)


@pytest.fixture(scope="module")
def host():
    return plugin_host()


def test_a_key_only_other_models_read_is_one_error_naming_them():
    with pytest.raises(UnreadKeyError) as caught:
        BundleConfig("Freq", "electronic", config_dict={"lora_rank": 4})
    assert str(caught.value) == ("lora_rank is not read by Freq (it is read by BundleSFT, PairRouteDK, "
                                 "PairSFT, RouteDK); remove it from the config overrides")
    assert isinstance(caught.value, SettingsError) and isinstance(caught.value, ConfigKeyError)


def test_an_adapter_given_to_the_prompted_student_is_refused(tmp_path):
    # BundleLLM never loads an adapter: it evaluated the bare model while config.yaml recorded one.
    path = tmp_path / "student.yaml"
    path.write_text("adapter_path: outputs/electronic/sft/adapter\n")
    with pytest.raises(UnreadKeyError, match=r"^adapter_path is not read by BundleLLM \(it is read by BundleSFT, "
                                             r"PairRouteDK, PairSFT, RouteDK\); remove it from config file "
                                             r".*student.yaml$"):
        BundleConfig("BundleLLM", "electronic", [path])


def test_the_command_line_says_it_in_one_line(tiny_data, capsys):
    argv = ["run", "--model=Freq", "--dataset=clothing", f"--data_path={tiny_data}", "--lora_rank=4"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: lora_rank is not read by Freq (it is read by BundleSFT, PairRouteDK, "
                   "PairSFT, RouteDK); remove it from the config overrides")


def test_the_students_chain_shares_its_keys(host):
    # BundleSFT.yaml extends BundleLLM.yaml, PairSFT.yaml and RouteDK.yaml extend both; PairRouteDK.yaml
    # extends all four.
    for model in ("BundleSFT", "PairSFT", "RouteDK", "PairRouteDK"):
        assert {"llm_model", "lora_rank", "adapter_path", "temperature"} <= keys_read_by(host.models.resolve(model), host)
    assert readers_of("llm_model", host) == ["BundleLLM", "BundleSFT", "PairRouteDK", "PairSFT",
                                             "RouteDK"]
    config = BundleConfig("PairSFT", "electronic", config_dict={"llm_model": "embedded", "lora_rank": 4})
    assert config["lora_rank"] == 4


def test_component_blocks_count_for_the_models_that_choose_components(host):
    freq, student, route = (host.models.resolve(m) for m in ("Freq", "BundleLLM", "RouteDK"))
    assert "icl" in keys_read_by(student, host) and "icl" not in keys_read_by(freq, host)
    assert "input_aware" in keys_read_by(route, host) and "input_aware" not in keys_read_by(student, host)
    # extractor and sampler blocks: distill reads them from the students' files, every run accepts them
    assert {"rules", "patterns", "diversity"} <= keys_read_by(freq, host)
    with pytest.raises(UnreadKeyError, match=r"^icl is not read by Freq \(it is read by BundleLLM, BundleSFT"):
        check_read_keys({"icl"}, freq, host, "the config overrides")


def test_only_keys_the_user_set_count():
    # Freq's resolved configuration holds RecBole's defaults it never reads (learning_rate, epochs):
    # they are not the user's, so they pass.
    config = BundleConfig("Freq", "electronic")
    assert {"learning_rate", "epochs", "train_neg_sample_args"} <= set(config.final_config_dict)
    # RecBole's own models' keys are foreign to a bundle model when set...
    with pytest.raises(UnreadKeyError, match=r"^n_layers is not read by Freq \(it is a setting of RecBole's own models\)"):
        BundleConfig("Freq", "electronic", config_dict={"n_layers": 2})
    # ...and read by a RecBole model, which refuses our models' keys.
    sasrec = BundleConfig("SASRec", "electronic_next", config_dict={"train_neg_sample_args": None, "n_layers": 1})
    assert sasrec["n_layers"] == 1
    with pytest.raises(UnreadKeyError, match=r"^lora_rank is not read by SASRec"):
        BundleConfig("SASRec", "electronic_next", config_dict={"train_neg_sample_args": None, "lora_rank": 4})


def test_an_unknown_key_still_gets_a_suggestion():
    with pytest.raises(ConfigKeyError, match=r"unknown config key 'lora_rnk' .*did you mean 'lora_rank'"):
        BundleConfig("Freq", "electronic", config_dict={"lora_rnk": 4})


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_committed_config_sets_only_keys_its_model_reads(path, host):
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if "model" not in values:  # distill configs: no model runs
        return
    check_read_keys(values, host.models.resolve(values["model"]), host, str(path))


@pytest.mark.parametrize("path", sorted(REPO.glob("configs/benchmarks/*.yaml")), ids=lambda p: p.name)
def test_every_committed_benchmark_shares_only_keys_a_method_reads(path, host, monkeypatch):
    monkeypatch.chdir(REPO)
    check_grid_keys(load_benchmark(path), host)


def _grid(tmp_path: Path, tiny_data: Path, overrides: str, methods: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(f"datasets: [clothing]\nseeds: [0]\noverrides: {{data_path: {tiny_data}{overrides}}}\n"
                    f"methods:\n{methods}")
    return path


def test_a_shared_benchmark_override_reaches_only_the_methods_that_read_it(tiny_data, tmp_path):
    methods = "  - {name: student, model: BundleLLM}\n  - {name: Freq, model: Freq}\n"
    path = _grid(tmp_path, tiny_data, ", llm_model: /no/such/llm", methods)
    cells = {c.method: c for c in plan(load_benchmark(path, {"freq_min_support": 0.01}, output_dir=tmp_path / "o"))}
    assert cells["student"].overrides["llm_model"] == "/no/such/llm" and "freq_min_support" not in cells["student"].overrides
    assert cells["Freq"].overrides["freq_min_support"] == 0.01 and "llm_model" not in cells["Freq"].overrides


def test_a_shared_benchmark_override_no_method_reads_is_refused(tiny_data, tmp_path, capsys):
    methods = "  - {name: Freq, model: Freq}\n  - {name: floor, model: Floor}\n"
    path = _grid(tmp_path, tiny_data, ", lora_rank: 4", methods)
    with pytest.raises(BenchmarkError, match=r"^lora_rank in the benchmark's `overrides:` is read by none of its "
                                             r"models \(Freq, Floor; it is read by BundleSFT, PairRouteDK, "
                                             r"PairSFT, RouteDK\)$"):
        plan(load_benchmark(path, output_dir=tmp_path / "o"))
    path = _grid(tmp_path, tiny_data, "", methods)
    assert main(["benchmark", "-c", str(path), "--plan", "--out", str(tmp_path / "o"), "--llm_model=x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: llm_model in the command line's overrides is read by none of its models") and "\n" not in err


def test_a_methods_own_key_must_be_its_models(tiny_data, tmp_path):
    path = _grid(tmp_path, tiny_data, "", "  - {name: Freq, model: Freq, lora_rank: 4}\n")
    with pytest.raises(BenchmarkError, match=r"^method 'Freq' on clothing: lora_rank is not read by Freq"):
        plan(load_benchmark(path, output_dir=tmp_path / "o"))


def _configs(tmp_path: Path, tiny_data: Path) -> list[Path]:
    paths = []
    for name, body in (("freq", "model: Freq"), ("student", "model: BundleLLM")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"{body}\ndataset: clothing\ndata_path: {tiny_data}\nrun_name: {name}\n")
        paths.append(path)
    return paths


def test_a_shared_compare_override_reaches_only_the_runs_that_read_it(tiny_data, tmp_path, monkeypatch):
    from recbole_bundlellm.commands import compare as compare_module

    ran = {}
    monkeypatch.setattr(compare_module, "run_with_config", lambda config: ran.setdefault(config["run_name"], config))
    compare_module.compare(_configs(tmp_path, tiny_data), {"llm_model": "/no/such/llm", "freq_min_support": 0.01})
    assert ran["student"]["llm_model"] == "/no/such/llm" and "freq_min_support" not in ran["student"].final_config_dict
    assert ran["freq"]["freq_min_support"] == 0.01 and "llm_model" not in ran["freq"].final_config_dict


def test_a_shared_compare_override_no_run_reads_is_refused(tiny_data, tmp_path, capsys):
    freq = _configs(tmp_path, tiny_data)[0]
    assert main(["compare", str(freq), "--lora_rank=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: lora_rank in the overrides is read by none of its models (Freq; "
                   "it is read by BundleSFT, PairRouteDK, PairSFT, RouteDK)")
    # with --floors the floors are runs too: their own key is read
    with pytest.raises(UnreadKeyError, match="read by none of its models \\(Freq, Floor;"):
        from recbole_bundlellm.commands.compare import compare
        compare([freq], {"lora_rank": 4}, floors=True)


def test_a_config_that_runs_no_model_can_accept_any_models_keys():
    # distill builds its config this way: its files are often the students' own.
    config = BundleConfig("BundleLLM", "electronic", config_dict={"lora_rank": 4}, check_model_keys=False)
    assert config["lora_rank"] == 4
