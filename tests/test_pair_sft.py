"""PairSFT on the tiny random model: each product's state is read at the end of its own line,
the pair loss trains the adapters and the head together, the adapter folder holds the head and is
reused by fingerprint, and the pair probabilities do not depend on the batch a session is in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.models.students.pair_sft import HEAD_FILE, PairHead, product_line_spans
from recbole_bundlellm.commands.runner import run

#: The tiny model has 2 blocks: read the last hidden states, adapters on every block.
FAST = {"epochs": 2, "train_batch_size": 2, "learning_rate": 0.01, "checkpoint_steps": 2, "adaptation": "sft",
        "pair_layer": -1, "lora_layers": None}


def test_each_product_is_read_at_the_last_token_of_its_own_line(tiny_llm_path):
    from recbole_bundlellm.llm import load_llm

    tokenizer = load_llm(str(tiny_llm_path), device="cpu", dtype="float32").tokenizer
    text = ("<|im_start|>user\nProducts:\n1. shirt one\n2. phone case\nexample\nProducts:\n1. [food] bread milk\n"
            "2. coffee\n3. tea sugar\nFor each product<|im_end|>\n")
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = product_line_spans(text, encoded["offset_mapping"], 3)
    words = [[tokenizer.convert_ids_to_tokens(encoded["input_ids"][t]) for t in span] for span in spans]
    # The last product list (the session's), not an example's: from the number to the title's end.
    assert words == [["1", "milk"], ["2", "coffee"], ["3", "sugar"]]
    with pytest.raises(ValueError, match="product line 4 not found"):
        product_line_spans(text, encoded["offset_mapping"], 4)


def test_the_pair_head_is_symmetric():
    head = PairHead(8, 4)
    states = torch.randn(3, 8)
    forward = head(states, torch.tensor([0, 1]), torch.tensor([2, 2]))
    backward = head(states, torch.tensor([2, 2]), torch.tensor([0, 1]))
    assert torch.allclose(forward, backward)


def test_pair_sft_trains_adapters_and_head_saves_both_and_reuses_them(tiny_data, tiny_llm_path):
    overrides = {"data_path": str(tiny_data), "llm_model": str(tiny_llm_path), **FAST}
    first = run("PairSFT", "clothing", config_dict=overrides, output_dir="out")
    training = first.info["training"]
    assert training["epochs_run"] == 2 and training["optimizer_steps"] > 0
    assert first.info["training_data"]["pairs"] > first.info["training_data"]["positive_pairs"] > 0
    adapter = Path("out/adapter")
    assert (adapter / HEAD_FILE).is_file() and (adapter / "adapter_model.safetensors").is_file()
    from safetensors.torch import load_file

    head = load_file(str(adapter / HEAD_FILE))
    assert set(head) == {"center", "scale", "calibrated", "project.weight", "project.bias", "score.0.weight",
                         "score.0.bias", "score.2.weight", "score.2.bias"}
    assert bool(head["calibrated"]) and float(head["scale"].min()) > 0  # standardised by training products
    assert "grouping" in first.info["decoding"]  # tuned on valid
    probe = first.info["pair_probe"]  # the head was fitted on the frozen model first (LP-FT)
    assert probe["steps"] > 0 and probe["loss_last_tenth"] < probe["loss_first_tenth"]
    assert "exactf1" in first.info["valid_before_training"]  # the probed head was a candidate epoch too
    again = run("PairSFT", "clothing", config_dict=overrides, output_dir="out")
    assert again.info["training"]["reused_adapter"].endswith("adapter")
    assert again.test_result == first.test_result
    records = [json.loads(line) for line in Path("out/predictions.jsonl").read_text().splitlines()]
    assert all(r["raw_text"] in ("", None) for r in records)  # nothing generated: structure from the pass


def test_pair_probabilities_do_not_depend_on_the_batch(tiny_data, tiny_llm_path):
    from recbole.data import create_dataset, data_preparation

    from recbole_bundlellm.config import BundleConfig
    from recbole_bundlellm.data.sessions import sessions_from_dataset
    from recbole_bundlellm.models.students.pair_sft import PairSFT

    config = BundleConfig("PairSFT", "clothing", [], {"data_path": str(tiny_data), "llm_model": str(tiny_llm_path),
                                                      "adaptation": "sft", "pair_layer": 2, "lora_layers": 1})
    train_data, _, _ = data_preparation(config, create_dataset(config))
    model = PairSFT(config, train_data.dataset)
    sessions = sessions_from_dataset(train_data.dataset)
    model.fit_bundles(sessions)
    views = model.views(sessions, training=False)
    for pooling in ("last", "mean"):
        model.config["pair_pooling"] = pooling
        model.config["generation_batch_size"] = 16
        together = model.probabilities(sessions, views)
        model.config["generation_batch_size"] = 1
        alone = model.probabilities(sessions, views)
        for a, b in zip(together, alone):
            assert a.shape == b.shape and np.allclose(a, b, atol=1e-5) and np.allclose(a, a.T)


def test_pair_sft_settings_errors_are_clear(tiny_data, tiny_llm_path):
    common = {"data_path": str(tiny_data), "llm_model": str(tiny_llm_path)}
    with pytest.raises(BundleLLMError, match="prompt_format: tags"):
        run("PairSFT", "clothing", output_dir="x", config_dict={**common, "prompt_format": "compact"})
    with pytest.raises(BundleLLMError, match="pair_layer is 16; use -1 .* or a block number from 1 to 2"):
        run("PairSFT", "clothing", output_dir="x", config_dict=common)


def test_lora_layers_adapt_only_the_blocks_below_the_one_read(tiny_data, tiny_llm_path):
    from recbole.data import create_dataset, data_preparation

    from recbole_bundlellm.config import BundleConfig
    from recbole_bundlellm.models.students.pair_sft import PairSFT

    config = BundleConfig("PairSFT", "clothing", [], {"data_path": str(tiny_data), "llm_model": str(tiny_llm_path),
                                                      "adaptation": "sft", "pair_layer": 1, "lora_layers": 1})
    train_data, _, _ = data_preparation(config, create_dataset(config))
    model = PairSFT(config, train_data.dataset)
    adapted = {n.split(".layers.")[1].split(".")[0] for n, p in model.llm.named_parameters()
               if p.requires_grad and "lora_" in n}
    assert adapted == {"0"}  # block 1 only (0-based 0): block 2 is never run
    assert any("mlp" in n and "lora_" in n for n, _ in model.llm.named_parameters())  # all-linear, spelled out


def test_a_killed_pair_sft_training_resumes_to_the_same_adapter_and_head(tiny_data, tiny_llm_path, tmp_path):
    """The head is fitted on the frozen model before the adapters train: a resumed run fits it
    again (seeded) and then loads its checkpoint, so it ends where an uninterrupted run ends."""
    from safetensors.torch import load_file
    from test_sft import _train_in_child

    config = {"data_path": str(tiny_data), "llm_model": str(tiny_llm_path), **FAST, "epochs": 3,
              "train_batch_size": 1, "checkpoint_steps": 2, "pair_probe_steps": 20}
    assert _train_in_child(tmp_path / "whole", config, model="PairSFT") == 0
    assert _train_in_child(tmp_path / "killed", config, kill_after=4, model="PairSFT") == -9
    assert _train_in_child(tmp_path / "killed", config, model="PairSFT") == 0
    assert "resuming training from epoch" in (tmp_path / "killed" / "run.log").read_text()
    for name in ("adapter_model.safetensors", HEAD_FILE):
        whole = load_file(str(tmp_path / "whole" / "adapter" / name))
        resumed = load_file(str(tmp_path / "killed" / "adapter" / name))
        assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole), name


def test_a_cut_test_split_does_not_cut_what_the_grouping_is_tuned_on(tiny_llm_path, tmp_path):
    """``eval_max_sessions`` cuts the test split only: the grouping is tuned on every valid session
    (``valid_max_sessions: ~``), as Pairwise's is, and ``valid_max_sessions`` still cuts valid."""
    from recbole_bundlellm.testing.easy_data import EASY_DOMAIN, prepare_easy_data

    data = prepare_easy_data(tmp_path / "easy", sessions=60)
    common = {"data_path": str(data), "llm_model": str(tiny_llm_path), **FAST, "epochs": 0, "pair_probe_steps": 2}
    whole = run("PairSFT", EASY_DOMAIN, config_dict={**common, "eval_max_sessions": 1}, output_dir="cut_test")
    assert len(_predictions("cut_test")) == 1
    assert whole.info["tuned"]["valid_sessions"] > 1
    cut = run("PairSFT", EASY_DOMAIN, config_dict={**common, "valid_max_sessions": 1}, output_dir="cut_valid")
    assert cut.info["tuned"]["valid_sessions"] == 1


def _predictions(folder: str) -> list[dict]:
    return [json.loads(line) for line in Path(folder, "predictions.jsonl").read_text().splitlines()]
