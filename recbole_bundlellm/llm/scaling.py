"""What lets a larger student fit a GPU: the attention kernel, 4-bit (QLoRA) loading and gradient
checkpointing, each checked against the machine before anything is loaded.

Every refusal is a :class:`~recbole_bundlellm.settings.SettingsError` naming the key: the user
asked for something this machine cannot do, and the run must not silently do something else.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from recbole_bundlellm.settings import SettingsError

#: ``attn_implementation`` values (``None``: transformers' default for the architecture, sdpa
#: where the model supports it).
ATTENTION_KERNELS = ("eager", "sdpa", "flash_attention_2")


def check_attention(kernel: str | None, device: torch.device, dtype: torch.dtype) -> str | None:
    """``attn_implementation`` checked for ``device`` / ``dtype``; ``None`` keeps transformers' choice."""
    if kernel is None:
        return None
    if kernel not in ATTENTION_KERNELS:
        raise SettingsError(f"attn_implementation '{kernel}' is not one of ~, {', '.join(ATTENTION_KERNELS)}")
    if kernel == "flash_attention_2":
        if device.type != "cuda":
            raise SettingsError(f"attn_implementation flash_attention_2 needs a CUDA GPU; the student loads on "
                                f"{device.type} here: use sdpa (or ~) on this machine")
        if dtype not in (torch.bfloat16, torch.float16):
            raise SettingsError("attn_implementation flash_attention_2 runs in bfloat16 or float16 only; "
                                f"set llm_dtype: bfloat16 (it is {str(dtype).removeprefix('torch.')})")
        if importlib.util.find_spec("flash_attn") is None:
            raise SettingsError("attn_implementation flash_attention_2 needs the flash-attn package, which is "
                                "not installed here: pip install flash-attn, or use sdpa")
    return kernel


def four_bit_config(device: torch.device, dtype: torch.dtype) -> Any:
    """The ``BitsAndBytesConfig`` of ``load_in_4bit`` (QLoRA: NF4 weights, double quantisation,
    computing in ``dtype``); refused without CUDA or without the bitsandbytes package.

    Untested here: the development machine has neither (the refusals are tested).
    """
    if device.type != "cuda":
        raise SettingsError(f"load_in_4bit (QLoRA) needs a CUDA GPU (bitsandbytes' 4-bit kernels); the student "
                            f"loads on {device.type} here: set load_in_4bit: False")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise SettingsError("load_in_4bit (QLoRA) needs the bitsandbytes package, which is not installed here: "
                            "pip install bitsandbytes, or set load_in_4bit: False")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype)


def prepare_four_bit_for_training(model: Any) -> Any:
    """peft's preparation of a 4-bit base before adapters: norms in float32, inputs that require
    grad (so checkpointed blocks still backpropagate into the adapters)."""
    from peft import prepare_model_for_kbit_training

    # Checkpointing is this project's own key (enable_gradient_checkpointing), not peft's default.
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute each block's activations in backward instead of keeping them (``gradient_checkpointing``).

    Non-reentrant checkpointing: the reentrant kind backpropagates nothing through a block whose
    inputs do not require grad, which a frozen base with LoRA adapters has (the embeddings are
    frozen); it also replays the saved RNG state, so dropout masks and the loss are unchanged.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers 5's name; the old one warns
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    # A KV cache is useless in a training pass and transformers refuses it with checkpointing.
    base.config.use_cache = False


__all__ = ["ATTENTION_KERNELS", "check_attention", "enable_gradient_checkpointing", "four_bit_config",
           "prepare_four_bit_for_training"]
