"""The default input representation of a router: the frozen base model's view of the prompt."""

from __future__ import annotations

import contextlib
from typing import Any

import torch


@torch.no_grad()
def prompt_representation(model: Any, input_ids: torch.Tensor,
                          attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the last hidden states over the prompt's tokens (padding left out by
    ``attention_mask``), ``[batch, hidden_size]`` in float32, from the base model alone.

    A peft model runs with its adapters disabled (``disable_adapter()``), so the representation
    does not depend on the experts or the mixture: it is computed once per prompt and can be
    cached. Padding on either side gives the same result as the prompt alone.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    off = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    with off:
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False)
    hidden = out.hidden_states[-1].float()
    mask = attention_mask.to(hidden.device, hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


__all__ = ["prompt_representation"]
