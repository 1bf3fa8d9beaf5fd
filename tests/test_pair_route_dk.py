"""PairRouteDK on the tiny random model: PairSFT experts (adapter + pair head) mixed per input by a
router. One-hot weights give exactly one expert's pair probabilities; the input-aware router trains
(experts and heads frozen), writes its weights per session and in the metrics, is reused by
fingerprint and resumes; experts it cannot mix are refused with one clear line. And the naive joint
baseline: one PairSFT adapter trained on both experts' examples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from recbole_bundlellm.commands.runner import run
from recbole_bundlellm.fusion.experts import Expert
from recbole_bundlellm.llm.lora import ADAPTER_INFO, AdapterError
from recbole_bundlellm.models.students.pair_route_dk import expert_states
from recbole_bundlellm.models.students.pair_sft import HEAD_FILE
from recbole_bundlellm.settings import SettingsError

from model_builders import built_model

#: The tiny model has 2 blocks: its experts read the last hidden states, adapters on every block.
EXPERT = {"epochs": 1, "train_batch_size": 4, "learning_rate": 0.01, "adaptation": "sft", "pair_layer": -1,
          "lora_layers": None, "pair_probe_steps": 20, "eval_step": 0}
ROUTER = {"epochs": 2, "train_batch_size": 2, "learning_rate": 0.05, "adaptation": "sft", "pair_layer": -1,
          "routing_layer": 1, "input_aware": {"hidden_size": 8}, "eval_step": 0, "checkpoint_steps": 2}


@pytest.fixture(scope="module")
def patterns(tiny_patterns) -> dict:
    """The settings of a run reading the tiny data's category patterns (distilled, no teacher)."""
    return tiny_patterns(1)


@pytest.fixture(scope="module")
def experts(tiny_data, tiny_llm_path, patterns, tmp_path_factory) -> dict[str, Path]:
    """{kind: output folder} of two PairSFT runs on the tiny model: the raw prompt, and the patterns'."""
    root = tmp_path_factory.mktemp("pair_experts")
    for seed, (kind, knowledge) in enumerate((("base", {}), ("patterns", patterns))):
        run("PairSFT", "clothing", output_dir=str(root / kind), config_dict={
            "data_path": str(tiny_data), "llm_model": str(tiny_llm_path), "seed": 100 + seed, **EXPERT, **knowledge})
    return {"base": root / "base", "patterns": root / "patterns"}


@pytest.fixture
def route(tiny_data, tiny_llm_path, experts, patterns):
    """The config of a PairRouteDK run over ``experts`` (by default the two above), reading the
    prompt the patterns expert was trained on, with ``overrides``."""
    def config(experts=experts, **overrides) -> dict:
        return {"data_path": str(tiny_data), "llm_model": str(tiny_llm_path),
                "experts": {k: str(v) for k, v in experts.items()}, **ROUTER, **patterns, **overrides}
    return config


def _records(result) -> list[dict]:
    return [json.loads(line) for line in (result.output_dir / "predictions.jsonl").read_text().splitlines()]


def test_one_hot_weights_give_that_experts_pair_probabilities(tiny_data, tiny_llm_path, experts, patterns, route):
    from recbole_bundlellm.data.sessions import sessions_from_dataset
    from recbole_bundlellm.models.base import without_labels

    alone, (train_data, _, _) = built_model("PairSFT", {"data_path": str(tiny_data), "llm_model": str(tiny_llm_path),
                                                   **EXPERT, **patterns})
    alone.load_adapter(experts["patterns"] / "adapter")
    routed, _ = built_model("PairRouteDK", route(fusion_router="fixed", fixed={"weights": {"patterns": 1}}))
    train = sessions_from_dataset(train_data.dataset)  # scored as unlabelled sessions: the tiny test split is 2
    for model in (alone, routed):
        model.fit_bundles(train)
    sessions = without_labels(train)
    views = alone.views(sessions, training=False)
    assert any(v.knowledge("patterns") for v in views)  # the prompt holds the patterns
    expected = alone.probabilities(sessions, views)
    got = routed.probabilities(sessions, views)
    assert len(expected) == len(got) and any(p.size for p in got)
    for a, b in zip(expected, got):
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-5)
    # The other expert alone scores otherwise: the weights chose, not the order of the experts.
    other, _ = built_model("PairRouteDK", route(fusion_router="fixed", fixed={"weights": {"base": 1}}))
    assert not all(np.allclose(a, b, atol=1e-5) for a, b in zip(expected, other.probabilities(sessions, views)))


def test_the_input_aware_router_trains_alone_routes_every_session_and_is_reused(route):
    result = run("PairRouteDK", "clothing", output_dir="route", config_dict=route())
    info = result.info
    assert info["router"]["name"] == "input_aware" and info["training"]["epochs_run"] == 2
    assert 0 < info["parameters"]["trainable"] == info["training"]["trainable_at_end"] < 1000  # the router only
    assert "grouping" in info["decoding"] and 0.0 <= result.test_result["exactf1"] <= 1.0
    records = _records(result)
    assert all(set(r["routing"]) == {"base", "patterns"} and sum(r["routing"].values()) == pytest.approx(1, abs=1e-3)
               for r in records)
    assert info["routing"]["sessions"] == len(records) and (result.output_dir / "routing.png").is_file()
    from safetensors.torch import load_file

    router = load_file(str(result.output_dir / "adapter" / "router.safetensors"))
    last = max(int(k.split(".")[1]) for k in router)  # the output layer starts at 0: the uniform mixture
    assert float(router[f"net.{last}.weight"].abs().sum()) > 0 and float(router[f"net.{last}.bias"].abs().sum()) > 0
    assert len({round(r["routing"]["base"], 4) for r in records}) > 1  # the weights depend on the input
    again = run("PairRouteDK", "clothing", output_dir="route", config_dict=route())
    assert again.info["training"]["reused_adapter"].endswith("adapter")
    assert again.test_result == result.test_result
    assert [r["routing"] for r in _records(again)] == [r["routing"] for r in records]


def test_the_input_aware_router_reads_session_features_when_asked(route, tiny_llm_path):
    """``input_aware: {session_features: True}``: every prompt PairRouteDK scores (training pairs,
    valid tuning, test) gets its features, and the router trains on them."""
    from safetensors.torch import load_file

    config = route(input_aware={"hidden_size": 8, "session_features": True})
    result = run("PairRouteDK", "clothing", output_dir="features", config_dict=config)
    info = result.info
    assert info["router"]["session_features"] == ["products", "prompt_tokens", "knowledge:patterns"]
    assert info["training"]["epochs_run"] == 2 and "grouping" in info["decoding"]
    hidden = json.loads((tiny_llm_path / "config.json").read_text())["hidden_size"]
    first = load_file(str(result.output_dir / "adapter" / "router.safetensors"))["net.1.weight"]
    assert first.shape == (8, hidden + 3) and float(first[:, hidden:].abs().sum()) > 0
    assert all(sum(r["routing"].values()) == pytest.approx(1, abs=1e-3) for r in _records(result))
    plain = run("PairRouteDK", "clothing", output_dir="features", config_dict=route())  # another router
    assert not plain.info["training"].get("reused_adapter") and "session_features" not in plain.info["router"]


def test_a_stopped_router_training_resumes_to_the_same_router(route, monkeypatch):
    import recbole_bundlellm.training.sft_trainer as trainer
    from safetensors.torch import load_file

    config = route(epochs=3, train_batch_size=1)
    run("PairRouteDK", "clothing", output_dir="whole", config_dict=config)
    real, saves = trainer.save_checkpoint, []

    def save_then_stop(*args, **kwargs):
        out = real(*args, **kwargs)
        saves.append(1)
        if len(saves) == 3:
            raise KeyboardInterrupt  # stopped mid-training, after its third checkpoint
        return out

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run("PairRouteDK", "clothing", output_dir="stopped", config_dict=config)
    monkeypatch.setattr(trainer, "save_checkpoint", real)
    resumed = run("PairRouteDK", "clothing", output_dir="stopped", config_dict=config)
    assert "resuming training from epoch" in (resumed.output_dir / "run.log").read_text()
    whole = load_file("whole/adapter/router.safetensors")
    again = load_file("stopped/adapter/router.safetensors")
    assert whole.keys() == again.keys() and all(torch.equal(whole[k], again[k]) for k in whole)


def test_static_routers_need_no_training_and_static_merge_chooses_on_valid(route):
    uniform = run("PairRouteDK", "clothing", output_dir="uniform", config_dict=route(fusion_router="uniform"))
    assert uniform.info["training"] == {"trained": False}
    assert all(r["routing"] == {"base": 0.5, "patterns": 0.5} for r in _records(uniform))
    merged = run("PairRouteDK", "clothing", output_dir="merged", config_dict=route(fusion_router="static_merge"))
    chosen = merged.info["tuned"]["static_weights"]
    assert len(chosen["grid"]) == 3 and "exact_f1" in chosen  # step 0.5 over two experts
    weights = merged.info["router"]["merged_weights"]
    assert all(r["routing"] == pytest.approx(weights, abs=1e-4) for r in _records(merged))
    assert "grouping" in merged.info["tuned"]["decoding"]  # the grouping tuned for the chosen weights


def _copy(expert: Path, to: Path, edit) -> Path:
    """A copy of the run folder ``expert`` whose adapter record ``edit`` changes in place."""
    shutil.copytree(expert, to)
    record = json.loads((to / "adapter" / ADAPTER_INFO).read_text())
    edit(record)
    (to / "adapter" / ADAPTER_INFO).write_text(json.dumps(record))
    return to


def test_experts_it_cannot_mix_are_refused_in_one_line(experts, route, tmp_path):
    # A LoRA adapter without a head, as a BundleSFT run writes (its record names no head file).
    headless = _copy(experts["patterns"], tmp_path / "headless", lambda r: r["weights_sha256"].pop(HEAD_FILE))
    (headless / "adapter" / HEAD_FILE).unlink()
    with pytest.raises(AdapterError, match=f"expert 'patterns' at .*headless/adapter has no {HEAD_FILE}: it is not "
                                           "a PairSFT adapter"):
        run("PairRouteDK", "clothing", output_dir="x", config_dict=route({"base": experts["base"],
                                                                          "patterns": headless}))
    other = _copy(experts["patterns"], tmp_path / "pooled", lambda r: r["pair_settings"].update(pair_pooling="last"))
    with pytest.raises(SettingsError, match="experts 'base' and 'patterns' read different states"):
        run("PairRouteDK", "clothing", output_dir="x", config_dict=route({"base": experts["base"], "patterns": other}))
    with pytest.raises(SettingsError, match="the experts' heads read .* set pair_layer: -1, pair_pooling: mean"):
        run("PairRouteDK", "clothing", output_dir="x", config_dict=route(pair_layer=1))
    # An expert saved before its record held the pair settings: its run's config.yaml says them.
    older = _copy(experts["patterns"], tmp_path / "older", lambda r: r.pop("pair_settings"))
    info = json.loads((older / "adapter" / ADAPTER_INFO).read_text())
    assert expert_states(Expert("patterns", older / "adapter", info)) == {"pair_layer": -1, "pair_pooling": "mean"}
    (older / "config.yaml").unlink()
    with pytest.raises(AdapterError, match="expert 'patterns' at .* does not say which states its head read"):
        expert_states(Expert("patterns", older / "adapter", info))
    from tiny_llm import make_tiny_llm

    elsewhere = make_tiny_llm(tmp_path / "other_model", seed=1)
    with pytest.raises(AdapterError, match="trained on the base model"):
        run("PairRouteDK", "clothing", output_dir="x", config_dict=route(llm_model=str(elsewhere)))
    with pytest.raises(SettingsError, match="PairRouteDK needs 'experts'.*PairSFT run"):
        run("PairRouteDK", "clothing", output_dir="x", config_dict=route({}))
    with pytest.raises(SettingsError, match="vote_experts does not apply"):
        run("PairRouteDK", "clothing", output_dir="x", config_dict=route(vote_experts=True))


def test_naive_joint_training_adds_the_raw_experts_examples(tiny_data, tiny_llm_path, patterns):
    """``pair_joint_raw``: the patterns expert's examples, and the base expert's for the same sessions."""
    common = {"data_path": str(tiny_data), "llm_model": str(tiny_llm_path), **EXPERT}
    base, (train_data, _, _) = built_model("PairSFT", common)
    joint, _ = built_model("PairSFT", {**common, **patterns, "pair_joint_raw": True})
    from recbole_bundlellm.data.sessions import sessions_from_dataset

    train = sessions_from_dataset(train_data.dataset)
    for model in (base, joint):
        model.fit_bundles(train)
    raw = {e.session_id: e for e in base.training_examples(train)}
    examples = joint.training_examples(train)
    copies = joint.run_info["training_data"]["raw_copies"]
    assert 0 < copies and len(examples) == len(raw) + copies
    assert all(e == raw[e.session_id] for e in examples[len(raw):])  # the base expert's very examples
    with_patterns = {e.session_id for e in examples[len(raw):]}
    assert all(e != raw[e.session_id] for e in examples[:len(raw)] if e.session_id in with_patterns)
