"""The default input representation of a router: the frozen base model's view of the prompt."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from recbole_bundlellm.llm.batches import left_padded
from recbole_bundlellm.settings import SettingsError

POOLINGS = ("mean", "last")


class _Reached(Exception):
    """Raised by the hook on the routing layer: the rest of the pass is not needed."""


def decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The transformer blocks of a (peft-wrapped) causal LM, in order: the ``ModuleList`` holding
    ``config.num_hidden_layers`` modules (``model.layers`` in Llama-like models)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    count = getattr(getattr(base, "config", None), "num_hidden_layers", None)
    for module in base.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise SettingsError(f"cannot find the {count} transformer blocks of {type(base).__name__}; "
                        "use routing_layer: -1 (the last hidden states)")


def routing_block(model: Any, layer: int, setting: str = "routing_layer") -> torch.nn.Module | None:
    """The transformer block whose output is the representation (``None`` for ``layer`` -1, the
    last hidden states); a ``layer`` outside -1 and 1..num_hidden_layers is an error naming
    ``setting``, the key it came from."""
    if layer == -1:
        return None
    blocks = decoder_layers(model)
    if not 1 <= layer <= len(blocks):
        raise SettingsError(f"{setting} is {layer}; use -1 (the last hidden states) or a block number "
                            f"from 1 to {len(blocks)}")
    return blocks[layer - 1]


@contextlib.contextmanager
def base_model_only(model: Any) -> Iterator[None]:
    """Run a peft model with its adapters disabled, leaving every ``requires_grad`` flag as it was.

    peft re-enables the adapters on exit through ``set_adapter``, which makes the active adapter
    trainable again: frozen experts would get gradients (and checkpoints) from then on.
    """
    off = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    try:
        with off:
            yield
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(name in trainable)


def hidden_states(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  block: torch.nn.Module | None) -> torch.Tensor:
    """``[batch, length, hidden]``: after the final norm (no ``block``) or the output of ``block``.

    Only the transformer body runs (its decoder, without the LM head: logits over the whole
    vocabulary for every prompt token would cost a quarter of the pass on a small model), and
    for an early block the pass stops there (a hook raises), so block k costs
    ``k / num_hidden_layers`` of a prompt pass.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = base.get_decoder() if hasattr(base, "get_decoder") else None
    if block is None:
        if body is None:
            out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False)
            return out.hidden_states[-1]
        return body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    captured: list[torch.Tensor] = []

    def stop(module: Any, args: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _Reached

    handle = block.register_forward_hook(stop)
    try:
        (body or model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _Reached:
        pass
    finally:
        handle.remove()
    return captured[0]


@torch.no_grad()
def prompt_representation(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          pooling: str = "mean", layer: int = -1) -> torch.Tensor:
    """The hidden states of the prompt's tokens (padding left out by ``attention_mask``) pooled
    to ``[batch, hidden_size]`` in float32, from the base model alone: their ``mean``, or the
    ``last`` prompt token's (which has read the whole prompt). ``layer`` -1 takes the last hidden
    states (after the final norm); ``k`` the output of transformer block k, and the pass stops
    there (cheaper: the router's input costs k/num_hidden_layers of a prompt pass).

    A peft model runs with its adapters disabled (``disable_adapter()``), so the representation
    does not depend on the experts or the mixture: it is computed once per prompt and can be
    cached. Padding on either side gives the same result as the prompt alone.
    """
    if pooling not in POOLINGS:
        raise SettingsError(f"routing_pooling '{pooling}' is not one of {', '.join(POOLINGS)}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    block = routing_block(model, layer)
    with base_model_only(model):
        hidden = hidden_states(model, input_ids, attention_mask, block).float()
    mask = attention_mask.to(hidden.device, hidden.dtype).unsqueeze(-1)
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=hidden.device, dtype=hidden.dtype)
        last = (mask.squeeze(-1) * (positions + 1)).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class RepresentationCache:
    """Prompt representations (:func:`prompt_representation`) by prompt token ids, each computed
    once: the router reads the same prompt every epoch and again at generation."""

    def __init__(self, model: Any, pad_id: int, pooling: str = "mean", batch_size: int = 16, layer: int = -1) -> None:
        if pooling not in POOLINGS:
            raise SettingsError(f"routing_pooling '{pooling}' is not one of {', '.join(POOLINGS)}")
        routing_block(model, layer)  # checks the layer now, not at the first prompt
        self.model, self.pad_id, self.pooling, self.batch_size = model, pad_id, pooling, batch_size
        self.layer = layer
        self._cache: dict[tuple[int, ...], torch.Tensor] = {}
        self.computed = 0  # prompts run through the base model (the rest came from the cache)

    def __len__(self) -> int:
        return len(self._cache)

    def clear(self) -> None:
        """Forget every cached representation (a benchmark timing the router's full cost)."""
        self._cache.clear()

    def __call__(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """``[len(prompts), hidden_size]`` float32 on the model's device."""
        keys = [tuple(int(t) for t in p) for p in prompts]
        missing = sorted({k for k in keys if k not in self._cache}, key=len)
        device = next(self.model.parameters()).device
        was_training = bool(getattr(self.model, "training", False))
        self.model.eval()  # no dropout in the base model's view
        try:
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start:start + self.batch_size]
                ids, mask = left_padded(chunk, self.pad_id)
                reps = prompt_representation(self.model, ids.to(device), mask.to(device), self.pooling,
                                            self.layer).cpu()
                for key, rep in zip(chunk, reps):
                    self._cache[key] = rep
                self.computed += len(chunk)
        finally:
            if was_training:
                self.model.train()
        return torch.stack([self._cache[k] for k in keys]).to(device)


__all__ = ["POOLINGS", "RepresentationCache", "base_model_only", "decoder_layers", "prompt_representation",
           "routing_block"]
