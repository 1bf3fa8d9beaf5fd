"""The default input representation of a router: the frozen base model's view of the prompt."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch

from recbole_bundlellm.settings import SettingsError

POOLINGS = ("mean", "last")


@torch.no_grad()
def prompt_representation(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          pooling: str = "mean") -> torch.Tensor:
    """The last hidden states of the prompt's tokens (padding left out by ``attention_mask``)
    pooled to ``[batch, hidden_size]`` in float32, from the base model alone: their ``mean``, or
    the ``last`` prompt token's (which has read the whole prompt).

    A peft model runs with its adapters disabled (``disable_adapter()``), so the representation
    does not depend on the experts or the mixture: it is computed once per prompt and can be
    cached. Padding on either side gives the same result as the prompt alone.
    """
    if pooling not in POOLINGS:
        raise SettingsError(f"routing_pooling '{pooling}' is not one of {', '.join(POOLINGS)}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    off = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    # peft re-enables the adapters on exit through set_adapter, which makes the active adapter
    # trainable again: frozen experts would get gradients (and checkpoints) from then on.
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    try:
        with off:
            out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False)
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(name in trainable)
    hidden = out.hidden_states[-1].float()
    mask = attention_mask.to(hidden.device, hidden.dtype).unsqueeze(-1)
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=hidden.device, dtype=hidden.dtype)
        last = (mask.squeeze(-1) * (positions + 1)).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class RepresentationCache:
    """Prompt representations (:func:`prompt_representation`) by prompt token ids, each computed
    once: the router reads the same prompt every epoch and again at generation."""

    def __init__(self, model: Any, pad_id: int, pooling: str = "mean", batch_size: int = 16) -> None:
        if pooling not in POOLINGS:
            raise SettingsError(f"routing_pooling '{pooling}' is not one of {', '.join(POOLINGS)}")
        self.model, self.pad_id, self.pooling, self.batch_size = model, pad_id, pooling, batch_size
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
                width = max(len(k) for k in chunk)
                ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, key in enumerate(chunk):
                    ids[row, width - len(key):] = torch.tensor(key, dtype=torch.long)
                    mask[row, width - len(key):] = 1
                reps = prompt_representation(self.model, ids.to(device), mask.to(device), self.pooling).cpu()
                for key, rep in zip(chunk, reps):
                    self._cache[key] = rep
                self.computed += len(chunk)
        finally:
            if was_training:
                self.model.train()
        return torch.stack([self._cache[k] for k in keys]).to(device)


__all__ = ["POOLINGS", "RepresentationCache", "prompt_representation"]
