"""RouteDK end to end on the tiny random model: experts from BundleSFT runs, a router trained with
the experts frozen (saved with safetensors, reused, loaded in a fresh process), the static
routers, routing weights in predictions and metrics, the expert store, K samples and the vote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recbole_bundlellm.llm.lora import ADAPTER_INFO, AdapterError, BaseModelId
from recbole_bundlellm.fusion.experts import ExpertStore, resolve_expert
from recbole_bundlellm.llm import model_content_hash
from recbole_bundlellm.commands.runner import run
from recbole_bundlellm.settings import SettingsError

REPO = Path(__file__).resolve().parents[1]
#: Two experts trained a few steps on the tiny data (9 training sessions), told apart by their seed.
EXPERT = {"epochs": 1, "train_batch_size": 2, "max_new_tokens": 6, "generation_batch_size": 8, "adaptation": "sft",
          "learning_rate": 0.01, "label_bias_grid": [], "eval_step": 0}
ROUTER = {"epochs": 2, "train_batch_size": 2, "max_new_tokens": 6, "generation_batch_size": 8, "learning_rate": 0.05,
          "label_bias_grid": [], "input_aware": {"hidden_size": 8}}


@pytest.fixture(scope="module")
def experts(tiny_data, tiny_llm_path, tmp_path_factory):
    """{kind: output folder} of two BundleSFT runs on the tiny model."""
    root = tmp_path_factory.mktemp("experts_root")
    folders = {}
    for seed, kind in enumerate(("base", "alt")):
        out = root / kind
        run("BundleSFT", "clothing", output_dir=str(out), config_dict={
            "data_path": str(tiny_data), "llm_model": str(tiny_llm_path), "seed": 100 + seed,
            "run_name": f"expert-{kind}", **EXPERT})
        folders[kind] = out
    return folders


def _route(tiny_data, tiny_llm_path, experts, out="route", **overrides):
    config = {"data_path": str(tiny_data), "llm_model": str(tiny_llm_path),
              "experts": {k: str(v) for k, v in experts.items()}, **ROUTER, **overrides}
    return run("RouteDK", "clothing", output_dir=out, config_dict=config)


def _records(result):
    return [json.loads(line) for line in (result.output_dir / "predictions.jsonl").read_text().splitlines()]


def test_the_router_trains_with_the_experts_frozen_and_every_session_is_routed(tiny_data, tiny_llm_path, experts):
    result = _route(tiny_data, tiny_llm_path, experts)
    info = result.info
    assert info["router"]["name"] == "input_aware" and info["router"]["trainable"]
    assert info["training"]["epochs_run"] == 2
    # Only the router trains: the experts' LoRA tensors are not in the checkpoint.
    assert 0 < info["parameters"]["trainable"] < 2000
    assert info["training"]["trainable_at_end"] == info["parameters"]["trainable"]  # still only the router
    for record in _records(result):
        weights = record["routing"]
        assert set(weights) == {"base", "alt"}
        assert sum(weights.values()) == pytest.approx(1.0, abs=1e-3)
    routing = info["routing"]
    assert routing["sessions"] == len(_records(result))
    assert sum(routing["mean_weight"].values()) == pytest.approx(1.0, abs=1e-3)
    assert 0 <= routing["mean_entropy"] <= routing["max_entropy"] + 1e-6
    assert (result.output_dir / "routing.png").stat().st_size > 1000
    # The saved router: safetensors beside its experts' fingerprints, reused by the next run.
    router = result.output_dir / "adapter"
    record = json.loads((router / ADAPTER_INFO).read_text())
    assert [e["kind"] for e in record["experts"]] == ["base", "alt"]
    from safetensors.torch import load_file

    assert set(load_file(str(router / "router.safetensors"))) <= {f"net.{i}.{w}" for i in range(5) for w in ("weight", "bias")}
    again = _route(tiny_data, tiny_llm_path, experts)
    assert again.info["training"]["reused_adapter"]
    assert again.test_result == result.test_result


def test_a_saved_router_loads_in_a_fresh_process_and_gives_the_same_weights(tiny_data, tiny_llm_path, experts, tmp_path):
    first = _route(tiny_data, tiny_llm_path, experts, out=str(tmp_path / "route"))
    script = f"""
import json, sys
from recbole_bundlellm.commands.runner import run
result = run("RouteDK", "clothing", output_dir={str(tmp_path / 'fresh')!r}, config_dict={{
    "data_path": {str(tiny_data)!r}, "llm_model": {str(tiny_llm_path)!r},
    "experts": {json.dumps({k: str(v) for k, v in experts.items()})}, **{ROUTER!r},
    "adapter_path": {str(tmp_path / 'route' / 'adapter')!r}}})
print(json.dumps(result.info["routing"]["mean_weight"]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True,
                         env={**__import__("os").environ, "PYTHONPATH": f"{REPO}:{REPO / 'plugins'}"})
    assert json.loads(out.stdout.strip().splitlines()[-1]) == first.info["routing"]["mean_weight"]


def test_static_routers_do_not_train_and_a_static_merge_is_chosen_on_valid(tiny_data, tiny_llm_path, experts):
    uniform = _route(tiny_data, tiny_llm_path, experts, out="uniform", fusion_router="uniform")
    assert uniform.info["training"] == {"trained": False}
    assert all(r["routing"] == {"base": 0.5, "alt": 0.5} for r in _records(uniform))
    only = _route(tiny_data, tiny_llm_path, experts, out="only", fusion_router="fixed", fixed={"weights": {"alt": 1}})
    assert only.info["routing"]["mean_weight"] == {"base": 0.0, "alt": 1.0}
    merged = _route(tiny_data, tiny_llm_path, experts, out="merged", fusion_router="static_merge")
    chosen = merged.info["decoding"] if "decoding" in merged.info else None
    assert chosen is None  # no label-bias grid here: only the static weights were tuned
    weights = merged.info["router"]["merged_weights"]
    assert sum(weights.values()) == pytest.approx(1.0) and set(weights.values()) <= {0.0, 0.5, 1.0}
    assert len(merged.info["router"]["settings"]) == 1


def test_a_one_hot_mixture_answers_as_its_expert_alone(tiny_data, tiny_llm_path, experts):
    alone = run("BundleSFT", "clothing", output_dir="alone", config_dict={
        "data_path": str(tiny_data), "llm_model": str(tiny_llm_path), **EXPERT, "seed": 101,
        "adapter_path": str(experts["alt"] / "adapter")})
    routed = _route(tiny_data, tiny_llm_path, experts, out="one_hot", fusion_router="fixed",
                    fixed={"weights": {"alt": 1}}, seed=101)
    assert [r["raw_text"] for r in _records(routed)] == [r["raw_text"] for r in _records(alone)]


def test_the_expert_store_lists_experts_of_its_base_and_refuses_others(tiny_llm_path, experts, tmp_path):
    base = BaseModelId(str(tiny_llm_path), model_content_hash(tiny_llm_path))
    root = next(iter(experts.values())).parent
    listed = ExpertStore(root, base).experts()
    assert sorted(e.folder.parent.name for e in listed) == ["alt", "base"]
    assert all(e.kind == "raw" and e.knowledge == [] and e.fingerprint for e in listed)
    other = BaseModelId("elsewhere", "another-hash")
    assert ExpertStore(root, other).experts() == [] and ExpertStore(root, other).other_bases() == 2
    with pytest.raises(AdapterError, match="trained on the base model"):
        resolve_expert("base", experts["base"], other)
    with pytest.raises(AdapterError, match="no trained adapter"):
        resolve_expert("rules", tmp_path / "missing", base)


def test_routedk_settings_errors_are_clear(tiny_data, tiny_llm_path, experts):
    with pytest.raises(SettingsError, match="RouteDK needs 'experts'"):
        _route(tiny_data, tiny_llm_path, {}, out="none")
    with pytest.raises(SettingsError, match="not an expert"):
        _route(tiny_data, tiny_llm_path, experts, out="bad", fusion_router="fixed", fixed={"weights": {"rulez": 1}})
    with pytest.raises(SettingsError, match="top_k"):
        _route(tiny_data, tiny_llm_path, experts, out="bad2", input_aware={"top_k": 3})


def test_k_voted_samples_share_one_prefill_and_vote(tiny_data, tiny_llm_path, experts):
    result = _route(tiny_data, tiny_llm_path, experts, out="vote", vote_samples=3, temperature=1.0)
    generation = result.info["generation"]
    assert generation["sequences"] == 3 * generation["prompts"]
    assert generation["shared_prefills"] == generation["prompts"]  # each prompt ran through the model once
    for record in _records(result):
        assert record["votes"] == 3
        assert record["parsed_answers"] <= 3
        assert record["raw_text"].count("\n---\n") == 2 or record["failure"]
    experts_too = _route(tiny_data, tiny_llm_path, experts, out="vote_experts", vote_samples=3, temperature=1.0,
                         vote_experts=True)
    for record in _records(experts_too):  # 3 samples + one answer of each of the 2 experts
        assert record["votes"] == 5



def test_bundlellm_experts_lists_the_experts_of_a_base(tiny_llm_path, experts, capsys):
    from recbole_bundlellm.commands.cli import main

    root = next(iter(experts.values())).parent
    assert main(["experts", "--root", str(root), "--llm-model", str(tiny_llm_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"2 experts of {tiny_llm_path} under {root}:")
    assert str(experts["base"] / "adapter") in out and str(experts["alt"] / "adapter") in out
