"""``bundlellm plan``: a student's parameters (exactly the model's), memory estimate, tokens per
epoch and warm-up timing on the tiny model; an 8B-class architecture planned on the meta device
without allocating it; a bad config is one error line."""

from __future__ import annotations

import json
import resource

import pytest
import torch

from recbole_bundlellm.commands.cli import main
from recbole_bundlellm.llm import load_llm
from recbole_bundlellm.llm.footprint import Batch, Shape, Training, activation_bytes
from recbole_bundlellm.llm.lora import LoraSettings, attach_lora, count_parameters

#: A Llama-3-8B-shaped config (no weights anywhere).
LLAMA_8B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
            "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": False}


def _plan(tiny_data, tiny_llm_path, *extra: str) -> list[str]:
    return ["plan", "--model", "BundleSFT", "--dataset", "clothing", f"--data_path={tiny_data}",
            f"--llm_model={tiny_llm_path}", "--adaptation=~", "--llm_device=cpu", *extra]


def test_plan_on_the_tiny_model_prints_the_models_own_counts(tiny_data, tiny_llm_path, tmp_path, capsys):
    assert main(_plan(tiny_data, tiny_llm_path, "--warmup-steps=2", "--lora_rank=4",
                      "--json", str(tmp_path / "plan.json"))) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "plan.json").read_text())
    # The same counts as the student a run builds: the base model with rank-4 adapters on every linear layer.
    expected = count_parameters(attach_lora(load_llm(str(tiny_llm_path), device="cpu", dtype="float32",
                                                     use_cache=False).model, LoraSettings(rank=4, alpha=32)))
    assert (report["parameters"], report["trainable"]) == (expected["total"], expected["trainable"])
    assert f"parameters            {expected['total']:,}" in out
    assert f"trainable parameters  {expected['trainable']:,}" in out
    memory = report["memory_bytes"]
    assert memory["adapters"] == memory["gradients"] == 4 * expected["trainable"]  # float32 adapters
    assert memory["optimizer"] == 8 * expected["trainable"]  # AdamW: two float32 states each
    assert memory["weights"] == 4 * (expected["total"] - expected["trainable"])
    assert memory["activations"] > 0 and memory["total"] == sum(memory[k] for k in
                                                                ("weights", "adapters", "gradients", "optimizer", "activations"))
    epoch = report["epoch"]
    assert epoch["examples"] == 9 and 0 < epoch["target_tokens"] < epoch["tokens"] <= epoch["padded_tokens"]
    assert report["warmup"]["steps"] == 2 and report["warmup"]["tokens_per_second"] > 0
    for text in ("weights", "optimizer (AdamW)", "activations", "tokens per epoch", "warm-up", "measured peak"):
        assert text in out


def test_checkpointing_and_eager_attention_change_the_activation_estimate():
    shape = Shape(layers=4, hidden=64, intermediate=128, heads=4, kv_dim=32, vocab=100)
    batch = Batch(sequences=2, length=50, target_tokens=10)
    base = Training(torch.float32, 4, 0, 0, 0, 0.0, gradient_checkpointing=False, eager_attention=False, lm_head=True)
    plain = activation_bytes(shape, batch, base)
    checkpointed = activation_bytes(shape, batch, Training(**{**vars(base), "gradient_checkpointing": True}))
    eager = activation_bytes(shape, batch, Training(**{**vars(base), "eager_attention": True}))
    assert checkpointed < plain < eager
    # Halving the batch halves what scales with tokens.
    assert activation_bytes(shape, Batch(1, 50, 5), base) == plain // 2


def test_an_8b_config_plans_on_the_meta_device_without_allocating(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_8B))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = main(["plan", "--model", "BundleSFT", "--dataset", "clothing", "--model-config", str(tmp_path),
                 "--gradient_checkpointing=True", "--json", str(tmp_path / "plan.json")])
    grown_gib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024**2
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "plan.json").read_text())
    assert report["device"] == "meta" and report["dtype"] == "bfloat16"
    assert report["parameters"] - report["trainable"] == 8_030_261_248  # Llama-3-8B's parameter count
    assert report["trainable"] == 41_943_040  # rank 16 on every linear projection of its 32 blocks
    assert 14.9 < report["memory_bytes"]["weights"] / 1024**3 < 15.0
    assert grown_gib < 1.0  # 16 GB of bfloat16 weights were never allocated
    assert "LlamaForCausalLM" in capsys.readouterr().out


@pytest.mark.parametrize("text,expected", [
    ("{not json", "cannot read a config.json"),
    (json.dumps({"hidden_size": 8}), "no model_type"),
    (json.dumps({"model_type": "no-such-architecture"}), "no-such-architecture"),
])
def test_a_bad_model_config_is_one_error_line(text, expected, tmp_path, capsys):
    (tmp_path / "config.json").write_text(text)
    code = main(["plan", "--model", "BundleSFT", "--dataset", "clothing", "--model-config", str(tmp_path / "config.json")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines


def test_a_model_that_does_not_train_is_refused_in_one_line(tiny_data, capsys):
    code = main(["plan", "--model", "Freq", "--dataset", "clothing", f"--data_path={tiny_data}"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "fine-tunes" in lines[0], lines
