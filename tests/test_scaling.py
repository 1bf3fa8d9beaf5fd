"""Ready for a GPU without one (issue 22): gradient checkpointing and the attention kernel by
configuration, and the QLoRA option refused clearly where it cannot run (no CUDA, no bitsandbytes).

The 4-bit loading itself (``BitsAndBytesConfig``) needs CUDA and bitsandbytes: it is not tested here.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from recbole_bundlellm.commands.cli import main
from recbole_bundlellm.commands.runner import run
from recbole_bundlellm.llm import load_llm
from recbole_bundlellm.llm.batches import SFTExample, answer_loss, collate
from recbole_bundlellm.llm.lora import LoraSettings, attach_lora
from recbole_bundlellm.llm.scaling import check_attention, enable_gradient_checkpointing, four_bit_config
from recbole_bundlellm.models.students.bundle_sft import BundleSFT, LATER_TRAINING_KEYS, TRAINING_KEYS
from recbole_bundlellm.settings import SettingsError

FAST = {"epochs": 1, "train_batch_size": 3, "max_new_tokens": 6, "generation_batch_size": 8, "adaptation": None,
        "learning_rate": 0.01, "eval_step": 0, "lora_dropout": 0.1}


def _loss_and_grads(path, checkpointing: bool) -> tuple[float, list[torch.Tensor]]:
    loaded = load_llm(str(path), device="cpu", dtype="float32", use_cache=False)
    torch.manual_seed(0)  # one LoRA initialisation for both
    model = attach_lora(loaded.model, LoraSettings(rank=4, alpha=8, dropout=0.3))  # dropout: the RNG is replayed
    if checkpointing:
        enable_gradient_checkpointing(model)
        base = model.get_base_model()
        assert getattr(base, "is_activation_checkpointing", None) or base.is_gradient_checkpointing
    model.train()
    tok = loaded.tokenizer
    ids = lambda text: tuple(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    batch = collate([SFTExample("a", ids("the user bought these items"), ids("[ 1 , 2 ]")),
                     SFTExample("b", ids("phone case charger cable shirt"), ids("[ 3 ]"))], tok.pad_token_id)
    torch.manual_seed(0)
    loss, _ = answer_loss(model, batch)
    loss.backward()
    grads = [p.grad.clone() for _, p in sorted(model.named_parameters()) if p.requires_grad]
    return loss.item(), grads


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_llm_path):
    off_loss, off_grads = _loss_and_grads(tiny_llm_path, checkpointing=False)
    on_loss, on_grads = _loss_and_grads(tiny_llm_path, checkpointing=True)
    assert on_loss == pytest.approx(off_loss, rel=1e-6)
    assert len(on_grads) == len(off_grads) > 0
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(on_grads, off_grads))
    assert any(g.abs().sum() > 0 for g in on_grads)  # the adapters did get gradients through the recomputed blocks


def test_a_run_with_checkpointing_and_another_kernel_trains_alike_and_keeps_the_fingerprint(tiny_data, tiny_llm_path):
    common = {"data_path": str(tiny_data), "llm_model": str(tiny_llm_path), **FAST}
    plain = run("BundleSFT", "clothing", config_dict=common, output_dir="plain")
    other = run("BundleSFT", "clothing", output_dir="other",
                config_dict={**common, "gradient_checkpointing": True, "attn_implementation": "eager"})
    assert other.info["attn_implementation"] == "eager" and plain.info["attn_implementation"] == "sdpa"
    # Neither key is in the fingerprint: an adapter trained one way is reused the other way.
    assert other.info["fingerprint"] == plain.info["fingerprint"]
    losses = [[e["mean_loss"] for e in r.info["training"]["epochs"]] for r in (plain, other)]
    assert losses[0] == pytest.approx(losses[1], abs=2e-4)


def test_load_in_4bit_enters_the_fingerprint_only_when_on():
    config = {k: 1 for k in TRAINING_KEYS} | {k: None for k in LATER_TRAINING_KEYS} | {"load_in_4bit": False}
    off = BundleSFT.training_settings(SimpleNamespace(config=config))
    on = BundleSFT.training_settings(SimpleNamespace(config={**config, "load_in_4bit": True}))
    assert "load_in_4bit" not in off and on["load_in_4bit"] is True


def test_flash_attention_and_4bit_are_refused_where_they_cannot_run(tiny_llm_path, monkeypatch):
    with pytest.raises(SettingsError, match="flash_attention_2 needs a CUDA GPU"):
        check_attention("flash_attention_2", torch.device("cpu"), torch.bfloat16)
    with pytest.raises(SettingsError, match="bfloat16 or float16"):
        check_attention("flash_attention_2", torch.device("cuda"), torch.float32)
    with pytest.raises(SettingsError, match="needs a CUDA GPU"):
        load_llm(str(tiny_llm_path), device="cpu", dtype="float32", load_in_4bit=True)
    # A CUDA machine without bitsandbytes (the check is by package, so a device object suffices).
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(SettingsError, match="needs the bitsandbytes package"):
        four_bit_config(torch.device("cuda"), torch.bfloat16)


@pytest.mark.parametrize("override,expected", [
    ("--load_in_4bit=True", "load_in_4bit (QLoRA) needs a CUDA GPU"),
    ("--attn_implementation=flash_attention_2", "flash_attention_2 needs a CUDA GPU"),
    ("--attn_implementation=fast", "attn_implementation must be"),
])
def test_the_cli_refuses_them_in_one_line(override, expected, tiny_data, tiny_llm_path, tmp_path, capsys):
    code = main(["run", "--model", "BundleSFT", "--dataset", "clothing", f"--data_path={tiny_data}",
                 f"--llm_model={tiny_llm_path}", "--llm_device=cpu", override, "--output-dir", str(tmp_path / "o")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
