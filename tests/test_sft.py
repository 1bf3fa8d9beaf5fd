"""Fine-tuning the student (BundleSFT through SFTTrainer) on the tiny random model: the loss is
on answer tokens only, training learns, checkpoints hold only trained tensors and resume exactly
after a SIGKILL, adapters are plain peft folders refused on another base, models sharing the
process's LLM never see each other's adapters."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from recbole_bundlellm.llm.batches import IGNORE_INDEX, SFTExample, answer_loss, collate, cut_to_length
from recbole_bundlellm.llm.checkpoint import CheckpointError, TrainingProgress, load_checkpoint, save_checkpoint
from recbole_bundlellm.llm.lora import AdapterError, BaseModelId, LoraSettings, attach_lora, check_base, save_adapter
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.llm import clear_llm_cache, load_llm
from recbole_bundlellm.commands.runner import run

REPO = Path(__file__).resolve().parents[1]
#: A few fast optimizer steps on the tiny data (9 training sessions).
FAST = {"epochs": 2, "train_batch_size": 2, "max_new_tokens": 6, "generation_batch_size": 8,
        "adaptation": None, "learning_rate": 0.01, "checkpoint_steps": 2}


def _private_lora(path: Path, dropout: float = 0.0):
    loaded = load_llm(str(path), device="cpu", dtype="float32", use_cache=False)
    return attach_lora(loaded.model, LoraSettings(rank=4, alpha=8, dropout=dropout)), loaded.tokenizer


def _example(tokenizer, prompt: str, target: str) -> SFTExample:
    ids = lambda text: tuple(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    return SFTExample("s", ids(prompt), ids(target) + (tokenizer.eos_token_id,))


def test_the_loss_is_computed_on_answer_tokens_only(tiny_llm_path):
    model, tokenizer = _private_lora(tiny_llm_path)
    a = _example(tokenizer, "the user bought these items", "[ 1 , 2 ]")
    b = _example(tokenizer, "phone case charger cable shirt jeans shoes", "[ 3 ]")
    batch = collate([a, b], tokenizer.pad_token_id)
    # Prompt and padding positions are ignored; exactly the target tokens are labels.
    assert int((batch["labels"] != IGNORE_INDEX).sum()) == len(a.target_ids) + len(b.target_ids)
    assert batch["labels"][0, :len(a.prompt_ids)].eq(IGNORE_INDEX).all()
    loss, tokens = answer_loss(model, batch)
    assert tokens == len(a.target_ids) + len(b.target_ids)
    # The same value by hand: cross-entropy of each target token given everything before it.
    with torch.no_grad():
        total = []
        for e in (a, b):
            ids = torch.tensor([list(e.prompt_ids) + list(e.target_ids)])
            logits = model(input_ids=ids).logits[0]
            for k in range(len(e.prompt_ids), ids.shape[1]):
                total.append(torch.nn.functional.cross_entropy(logits[k - 1], ids[0, k]))
    assert loss.item() == pytest.approx(torch.stack(total).mean().item(), rel=1e-5)
    # A too-long example loses the start of its prompt, never a target token.
    cut, was_cut = cut_to_length(a, len(a.target_ids) + 1)
    assert was_cut and cut.prompt_ids == a.prompt_ids[-1:] and cut.target_ids == a.target_ids


def test_a_few_real_training_steps_lower_the_loss_and_change_the_answer(tiny_data, tiny_llm_path):
    overrides = {"data_path": str(tiny_data), "llm_model": str(tiny_llm_path), **FAST, "epochs": 4, "eval_step": 0}
    result = run("BundleSFT", "clothing", config_dict=overrides, output_dir="out")
    epochs = result.info["training"]["epochs"]
    assert len(epochs) == 4 and epochs[-1]["mean_loss"] < epochs[0]["mean_loss"] * 0.8
    assert 0 < result.info["parameters"]["trainable"] < result.info["parameters"]["total"]
    trained = [json.loads(line)["raw_text"] for line in Path("out/predictions.jsonl").read_text().splitlines()]
    untrained = run("BundleLLM", "clothing", output_dir="base", config_dict={
        "data_path": str(tiny_data), "llm_model": str(tiny_llm_path), "prompt_format": "compact",
        "show_categories": True, "max_title_words": 6, "max_new_tokens": 6, "stop_strings": []})
    base = [json.loads(line)["raw_text"] for line in Path("base/predictions.jsonl").read_text().splitlines()]
    assert untrained.test_result is not None and trained != base


def test_checkpoints_hold_only_trained_tensors_and_load_in_a_fresh_process(tiny_llm_path, tmp_path):
    model, _ = _private_lora(tiny_llm_path, dropout=0.1)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
    model(input_ids=torch.tensor([[5, 6, 7]])).logits.sum().backward()
    optimizer.step()
    path = save_checkpoint(tmp_path / "last.safetensors", model, optimizer, TrainingProgress("fp", 1, 3, 7))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        names = {k.removeprefix("param/") for k in f.keys() if k.startswith("param/")}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == trainable and all("lora_" in n for n in names)
    assert path.stat().st_size < 200_000  # the frozen base is not in it
    script = textwrap.dedent(f"""
        import torch
        from recbole_bundlellm.llm.checkpoint import load_checkpoint
        from recbole_bundlellm.llm.lora import LoraSettings, attach_lora
        from recbole_bundlellm.llm import load_llm
        m = attach_lora(load_llm({str(tiny_llm_path)!r}, device="cpu", dtype="float32", use_cache=False).model,
                        LoraSettings(rank=4, alpha=8, dropout=0.1))
        o = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=0.01)
        p = load_checkpoint({str(path)!r}, m, o)
        print(p.epoch, p.step_in_epoch, p.global_step, len(o.state_dict()["state"]),
              float(sum(t.sum() for n, t in m.named_parameters() if t.requires_grad)))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'plugins'}"})
    epoch, step, global_step, states, total = out.stdout.split()
    assert (epoch, step, global_step) == ("1", "3", "7") and int(states) == len(trainable)
    expected = float(sum(t.detach().sum() for n, t in model.named_parameters() if t.requires_grad))
    assert float(total) == pytest.approx(expected, rel=1e-6)


def test_a_full_disk_keeps_the_previous_checkpoint(tiny_llm_path, tmp_path, monkeypatch):
    model, _ = _private_lora(tiny_llm_path)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
    path = save_checkpoint(tmp_path / "last.safetensors", model, optimizer, TrainingProgress("fp", 1))
    before = path.read_bytes()

    def full_disk(fd):  # a full disk reports ENOSPC when the written data reaches it
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(CheckpointError, match="no space left on device.*previous checkpoint"):
        save_checkpoint(path, model, optimizer, TrainingProgress("fp", 2))
    monkeypatch.undo()
    assert path.read_bytes() == before and load_checkpoint(path, model).epoch == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]  # no temporary file left


_KILLED_RUN = """
import os, signal, sys
import recbole_bundlellm.training.sft_trainer as t
from recbole_bundlellm.commands.runner import run
real, saves = t.save_checkpoint, []
def save_then_die(*args, **kwargs):
    out = real(*args, **kwargs)
    saves.append(1)
    if len(saves) == int(os.environ.get("KILL_AFTER_SAVES", "0")):
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind, as on a real kill
    return out
t.save_checkpoint = save_then_die
run({model!r}, "clothing", config_dict={config!r}, output_dir=sys.argv[1])
"""


def _train_in_child(out: Path, config: dict, kill_after: int = 0, model: str = "BundleSFT") -> int:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'plugins'}", "KILL_AFTER_SAVES": str(kill_after),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", _KILLED_RUN.format(config=config, model=model), str(out)], env=env,
                          capture_output=True, text=True).returncode


def test_a_killed_training_resumes_to_the_same_adapter(tiny_data, tiny_llm_path, tmp_path):
    from safetensors.torch import load_file

    config = {"data_path": str(tiny_data), "llm_model": str(tiny_llm_path), **FAST, "epochs": 3,
              "train_batch_size": 1, "lora_dropout": 0.2, "checkpoint_steps": 2}
    assert _train_in_child(tmp_path / "whole", config) == 0
    assert _train_in_child(tmp_path / "killed", config, kill_after=5) == -9  # SIGKILL mid-training
    training = tmp_path / "killed.training"
    assert any(training.rglob("last.safetensors")) and not (tmp_path / "killed").exists()
    assert _train_in_child(tmp_path / "killed", config) == 0
    log = (tmp_path / "killed" / "run.log").read_text()
    assert "resuming training from epoch" in log
    whole = load_file(str(tmp_path / "whole" / "adapter" / "adapter_model.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "adapter" / "adapter_model.safetensors"))
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert not training.exists()  # the resumable state goes once the run is whole


def test_a_trained_adapter_is_reused_by_fingerprint_and_loads_with_peft(tiny_data, tiny_llm_path):
    overrides = {"data_path": str(tiny_data), "llm_model": str(tiny_llm_path), **FAST}
    first = run("BundleSFT", "clothing", config_dict=overrides, output_dir="out")
    assert "reused_adapter" not in first.info["training"]
    again = run("BundleSFT", "clothing", config_dict=overrides, output_dir="out")
    assert again.info["training"]["reused_adapter"].endswith("adapter")
    assert again.test_result == first.test_result
    changed = run("BundleSFT", "clothing", config_dict={**overrides, "lora_rank": 4}, output_dir="out")
    assert "reused_adapter" not in changed.info["training"]  # other settings: trained anew
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llm_path), "out/adapter")
    assert any("lora_" in n for n, _ in peft_model.named_parameters())


def test_shuffled_answer_orders_are_seeded_per_session(tiny_data, tiny_llm_path):
    overrides = {"data_path": str(tiny_data), "llm_model": str(tiny_llm_path), **FAST, "epochs": 1,
                 "prompt_format": "tags", "answer_order": "shuffled"}
    first = run("BundleSFT", "clothing", config_dict=overrides, output_dir="a")
    again = run("BundleSFT", "clothing", config_dict=overrides, output_dir="b")
    session = run("BundleSFT", "clothing", config_dict={**overrides, "answer_order": "session"}, output_dir="c")
    assert first.info["fingerprint"] == again.info["fingerprint"] != session.info["fingerprint"]
    with pytest.raises(BundleLLMError, match="answer_order 'random' is not one of session, shuffled"):
        run("BundleSFT", "clothing", config_dict={**overrides, "answer_order": "random"}, output_dir="d")


def test_an_adapter_is_refused_on_another_base(tiny_llm_path, tmp_path):
    model, _ = _private_lora(tiny_llm_path)
    folder = save_adapter(model, tmp_path / "adapter", BaseModelId("a/model", "a" * 64), "fp")
    assert check_base(folder, BaseModelId("elsewhere", "a" * 64))["fingerprint"] == "fp"
    with pytest.raises(AdapterError, match="trained on the base model 'a/model'.*use the base it was trained on"):
        check_base(folder, BaseModelId("other/model", "b" * 64))


def test_an_adapter_path_from_another_base_is_a_clear_error(tiny_data, tiny_llm_path, tmp_path):
    from tiny_llm import make_tiny_llm

    other = make_tiny_llm(tmp_path / "other", seed=1)
    overrides = {"data_path": str(tiny_data), "llm_model": str(tiny_llm_path), **FAST, "epochs": 1}
    run("BundleSFT", "clothing", config_dict=overrides, output_dir="out")
    with pytest.raises(AdapterError, match="trained on the base model"):
        run("BundleSFT", "clothing", output_dir="other_out",
            config_dict={**overrides, "llm_model": str(other), "adapter_path": "out/adapter"})


def test_models_sharing_the_llm_never_see_each_others_adapters(tiny_data, tiny_llm_path):
    clear_llm_cache()
    common = {"data_path": str(tiny_data), "llm_model": str(tiny_llm_path), "max_new_tokens": 4}
    before = run("BundleLLM", "clothing", config_dict=common, output_dir="a").test_result
    run("BundleSFT", "clothing", config_dict={**common, **FAST}, output_dir="sft")
    shared = load_llm(str(tiny_llm_path), device="cpu", dtype="float32").model
    assert not any("lora_" in n for n, _ in shared.named_parameters())
    assert not any(p.requires_grad for p in shared.parameters()) and not shared.training
    assert run("BundleLLM", "clothing", config_dict=common, output_dir="b").test_result == before


@pytest.mark.slow
def test_the_real_embedded_student_trains_a_few_steps(tiny_data):
    """SmolLM2-135M-Instruct with LoRA: a few real steps on the tiny sessions, loss going down,
    an adapter that loads with peft, answers parsed from the tags format."""
    overrides = {"data_path": str(tiny_data), "adaptation": "sft", "prompt_format": "tags", "epochs": 2,
                 "train_batch_size": 3, "learning_rate": 0.002, "eval_step": 0, "max_new_tokens": 24,
                 "lora_rank": 4}
    result = run("BundleSFT", "clothing", config_dict=overrides, output_dir="out")
    epochs = result.info["training"]["epochs"]
    assert epochs[-1]["mean_loss"] < epochs[0]["mean_loss"]
    assert result.info["source"] == "embedded" and result.info["parameters"]["trainable"] > 0
    from peft import PeftConfig

    assert PeftConfig.from_pretrained("out/adapter").r == 4
    assert result.test_result["failurerate"] < 1.0  # the trained student answers in the format


def test_a_logit_bias_steers_generation(tiny_llm_path):
    from recbole_bundlellm.generation.generator import BatchGenerator, GenerationConfig

    loaded = load_llm(str(tiny_llm_path), device="cpu", dtype="float32")
    prompt = [[{"role": "user", "content": "phone case charger"}]]
    plain = BatchGenerator(loaded.model, loaded.tokenizer, GenerationConfig(max_new_tokens=3)).generate(prompt)
    token = loaded.tokenizer.convert_tokens_to_ids("banana")
    biased = BatchGenerator(loaded.model, loaded.tokenizer,
                            GenerationConfig(max_new_tokens=3, logit_bias={token: 1e4})).generate(prompt)
    assert biased[0][0] == "banana banana banana" != plain[0][0]


def test_the_tags_decoding_is_calibrated_on_valid_and_recorded(tiny_data, tiny_llm_path):
    overrides = {"data_path": str(tiny_data), "llm_model": str(tiny_llm_path), **FAST, "epochs": 1,
                 "prompt_format": "tags", "label_bias_grid": [0, 2]}
    result = run("BundleSFT", "clothing", config_dict=overrides, output_dir="out")
    decoding = result.info["decoding"]
    assert set(decoding["grid"]) == {"0,0", "0,2", "2,0", "2,2"}
    assert decoding["exact_f1"] == max(decoding["grid"].values()) >= decoding["unbiased"]
    assert "tuned on valid" in Path("out/run.log").read_text()
    plain = run("BundleSFT", "clothing", config_dict={**overrides, "label_bias_grid": []}, output_dir="out")
    assert "decoding" not in plain.info and plain.info["training"]["reused_adapter"]  # same adapter


def test_balanced_label_weights_find_each_tags_label_and_weigh_classes_alike(tiny_llm_path):
    from types import SimpleNamespace

    from recbole_bundlellm.llm.batches import class_balanced_weights
    from recbole_bundlellm.models.students.bundle_sft import BundleSFT

    tokenizer = load_llm(str(tiny_llm_path), device="cpu", dtype="float32").tokenizer
    owner = SimpleNamespace(config={"label_weighting": "balanced"}, tokenizer=tokenizer)
    answers = ["3:A 1:A 2:A 4:-", "Reasoning: 1:B is noise here\nAnswer: 2:A 1:B 3:A"]
    targets = [BundleSFT._target(owner, answer, tokenizer.eos_token) for answer in answers]
    for answer, (ids, classes) in zip(answers, targets):
        assert ids == tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        assert len(classes) == len(ids)
    # One class per product label, in answer order; the reasoning's "1:B" is not a label.
    assert [c for c in targets[0][1] if c] == ["A", "A", "A", "-"]
    assert [c for c in targets[1][1] if c] == ["A", "new", "A"]
    weights = class_balanced_weights([classes for _, classes in targets])
    label_weight = {c: w for (_, classes), ws in zip(targets, weights) for c, w in zip(classes, ws) if c}
    # 5 A, 1 -, 1 new: each class carries the same total weight; other tokens keep weight 1.
    assert label_weight["A"] * 5 == pytest.approx(label_weight["-"]) == pytest.approx(label_weight["new"])
    assert all(w == 1.0 for (_, classes), ws in zip(targets, weights) for c, w in zip(classes, ws) if c is None)
    batch = collate([SFTExample("s", (5, 6), tuple(targets[0][0]), target_weights=weights[0])], 0)
    assert batch["token_weights"][0, 2:].tolist() == pytest.approx(list(weights[0]))
    assert batch["token_weights"][0, :2].tolist() == [1.0, 1.0]


def test_a_damaged_adapter_is_trained_again_or_refused(tiny_data, tiny_llm_path, tmp_path):
    overrides = {"data_path": str(tiny_data), "llm_model": str(tiny_llm_path), **FAST, "epochs": 1, "eval_step": 0}
    first = run("BundleSFT", "clothing", config_dict=overrides, output_dir="out")
    info = json.loads(Path("out/adapter/bundlellm_adapter.json").read_text())
    assert set(info["weights_sha256"]) == {"adapter_model.safetensors"}
    kept = tmp_path / "kept"
    shutil.copytree("out/adapter", kept)
    weights = Path("out/adapter/adapter_model.safetensors")
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # same size, valid header: only the hash can tell
    weights.write_bytes(bytes(data))
    again = run("BundleSFT", "clothing", config_dict=overrides, output_dir="out")
    assert "reused_adapter" not in again.info["training"]  # trained anew, not the damaged one
    assert again.test_result == first.test_result
    damaged = kept / "adapter_model.safetensors"
    damaged.write_bytes(bytes(data))
    with pytest.raises(BundleLLMError, match="changed after it was saved .* delete the folder to train again"):
        run("BundleSFT", "clothing", config_dict={**overrides, "adapter_path": str(kept)}, output_dir="x")


def test_damaged_safetensors_anywhere_are_one_clear_error(tiny_llm_path, tmp_path):
    from recbole_bundlellm.llm.checkpoint import read_tensors
    from recbole_bundlellm.llm.lora import DamagedAdapter, load_adapter
    from recbole_bundlellm.fusion.mixture import load_experts

    model, _ = _private_lora(tiny_llm_path)
    base = BaseModelId(str(tiny_llm_path), "h")
    folder = save_adapter(model, tmp_path / "adapter", base, "fp")
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])  # truncated
    with pytest.raises(CheckpointError, match=f"{weights} cannot be read .*delete it"):
        read_tensors(weights, "delete it to train again")
    with pytest.raises(DamagedAdapter, match="changed after it was saved"):  # the recorded hash tells first
        load_adapter(_private_lora(tiny_llm_path)[0].get_base_model(), folder, base)
    # An expert folder without weights (written before hashes were recorded): never a hub lookup.
    info = json.loads((folder / "bundlellm_adapter.json").read_text())
    info.pop("weights_sha256")
    (folder / "bundlellm_adapter.json").write_text(json.dumps(info))
    weights.unlink()
    fresh = load_llm(str(tiny_llm_path), device="cpu", dtype="float32", use_cache=False).model
    with pytest.raises(DamagedAdapter, match="holds no adapter_model.safetensors: it is not a LoRA adapter"):
        load_experts(fresh, {"base": folder}, base)
