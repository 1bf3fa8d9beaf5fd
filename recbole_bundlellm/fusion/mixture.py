"""Several LoRA experts of one base model, mixed per input in one forward pass.

Every expert is an ordinary peft adapter (what :func:`~recbole_bundlellm.llm.lora.save_adapter`
writes); :func:`load_experts` loads them all into one ``PeftModel`` under their kind's name
(peft's ``load_adapter(..., adapter_name=kind)``), after checking each was trained on this base.
:class:`MixtureOfLoRA` then makes each LoRA linear layer compute::

    base(x) + sum_e w[b, e] * scaling_e * B_e(A_e(dropout_e(x)))

with ``w`` the per-input weights of :meth:`MixtureOfLoRA.weights` (``[batch, n_experts]``, or
``[batch, n_layers, n_experts]`` for per-layer weights), so one pass of the model serves a batch
whose inputs each have their own mixture.

What peft gives and what is ours: peft holds the experts (``lora_A``/``lora_B``/``scaling``/
``lora_dropout`` per adapter name in each ``LoraLayer``), loads them, disables them
(``disable_adapter``) and checks bases through our adapter folders. Its own ways of combining
adapters do not fit RouteDK: ``set_adapter([...])`` sums active adapters with weight 1 for every
input; ``adapter_names=[...]`` routes each input to *one* adapter; ``add_weighted_adapter``
merges static weights into a new adapter (one mixture for all inputs); X-LoRA
(``peft/tuners/xlora``) does weight adapters per input and layer, but its classifier is bound
into the model: each forward runs the model twice (a scaling pass with dummy weights, then the
real pass) and predicts per-token weights from the model's own hidden states, so a router cannot
be given a precomputed prompt representation, be swapped for a plugin, or run once per prompt.
So, like X-LoRA does, we replace each LoRA layer's ``forward`` on the instance (the class and
every other model stay untouched) with one that weights each expert's delta per input by weights
held in this object, and give peft's forward back outside :meth:`MixtureOfLoRA.weights`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from recbole_bundlellm.llm.lora import AdapterError, BaseModelId, check_base, check_lora_weights


def load_experts(model: Any, folders: Mapping[str, str | os.PathLike], base: BaseModelId) -> Any:
    """One ``PeftModel`` over ``model`` (the caller's own copy of ``base``) holding every expert
    of ``folders`` (kind -> adapter folder) under its kind's name, frozen.

    Each folder must have been trained on ``base`` (same content hash), else :class:`AdapterError`.
    """
    from peft import PeftModel

    if not folders:
        raise AdapterError("no experts to load")
    for folder in folders.values():
        check_base(folder, base)
        check_lora_weights(folder)
    items = list(folders.items())
    first_name, first_folder = items[0]
    peft_model = PeftModel.from_pretrained(model, str(first_folder), adapter_name=first_name, is_trainable=False)
    for name, folder in items[1:]:
        peft_model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
    return peft_model


class MixtureOfLoRA:
    """Per-input mixture of the LoRA adapters ``experts`` of ``model`` (a peft model).

    Outside a :meth:`weights` block the model behaves exactly as peft makes it (active adapters
    only). Inside, every LoRA linear layer adds the experts' deltas weighted per input. The
    experts are frozen here (``requires_grad`` off): only a router trains. :meth:`remove` gives
    every layer its peft forward back. (peft's ``set_adapter(name)`` makes that adapter trainable
    again; pass ``inference_mode=True`` to keep it frozen.)

    Every expert's delta is computed for every input, also where its weight is 0 (top-k): it
    keeps the pass free of host syncs; skipping zero-weight experts is an optimisation left open.
    """

    def __init__(self, model: Any, experts: Sequence[str]) -> None:
        from peft.tuners.lora import LoraLayer
        from peft.tuners.lora import Linear as LoraLinear

        if not experts or len(set(experts)) != len(experts):
            raise AdapterError(f"a mixture needs distinct expert names, got {list(experts)}")
        self.model = model
        self.expert_names: tuple[str, ...] = tuple(experts)
        self._weights: torch.Tensor | None = None
        self._layers: list[tuple[str, Any]] = []
        # Per layer: the frozen experts' A and B stacked (see _stacked_delta), built on first use.
        self._stacks: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        # Layers whose experts have the same ranks and scalings share one (owner, scaling) pair, so
        # at inference each rank row's weight is computed once per forward pass, not once per layer.
        self._layouts: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._rank_weights: dict[tuple[int, int, int], torch.Tensor] = {}
        seen: set[str] = set()
        for name, module in model.named_modules():
            if not isinstance(module, LoraLayer):
                continue
            held = [e for e in self.expert_names if e in module.lora_A]
            if not held:
                continue
            # Only plain LoRA on nn.Linear: embeddings, convolutions, quantised layers and
            # variants (DoRA, aLoRA) compute their deltas differently.
            if type(module) is not LoraLinear:
                raise AdapterError(f"layer {name} is a {type(module).__name__}; a mixture of LoRA experts "
                                   "supports LoRA on linear layers only (lora_target_modules)")
            variants = [e for e in held if e in module.lora_variant]
            if variants:
                raise AdapterError(f"experts {variants} use a LoRA variant (DoRA...) at {name}; "
                                   "a mixture supports plain LoRA only")
            seen.update(held)
            self._layers.append((name, module))
        missing = [e for e in self.expert_names if e not in seen]
        if missing:
            present = sorted({a for _, m in model.named_modules() if isinstance(m, LoraLayer) for a in m.lora_A})
            raise AdapterError(f"the model holds no LoRA adapter named {', '.join(map(repr, missing))} "
                               f"(it holds: {', '.join(present) or 'none'})")
        for _, module in self._layers:
            for expert in self.expert_names:
                if expert in module.lora_A:
                    for param in (*module.lora_A[expert].parameters(), *module.lora_B[expert].parameters()):
                        param.requires_grad_(False)
        for index, (_, module) in enumerate(self._layers):
            module.forward = self._forward_of(module, index)

    # -- what a router needs to know ------------------------------------------------------------
    @property
    def layer_names(self) -> list[str]:
        """The LoRA layers the mixture drives, in the order of per-layer weights' ``n_layers`` axis."""
        return [name for name, _ in self._layers]

    @property
    def n_layers(self) -> int:
        return len(self._layers)

    @property
    def n_experts(self) -> int:
        return len(self.expert_names)

    # -- mixing ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def weights(self, w: torch.Tensor) -> Iterator[None]:
        """Run the model with per-input expert weights ``w``: ``[batch, n_experts]`` or
        ``[batch, n_layers, n_experts]`` (in :attr:`expert_names` / :attr:`layer_names` order).

        ``w`` is moved to the model's device; each layer casts it to its own dtype. Gradients flow
        through ``w`` (to the router). A model input batch that is a multiple of ``w``'s (e.g.
        generation with ``num_return_sequences``, which repeats each input in place) uses each row
        of ``w`` for its repeats. Blocks nest; the outer weights come back on exit.
        """
        if not self._layers:
            raise AdapterError("this mixture was removed from its model")
        if w.dim() not in (2, 3) or w.shape[-1] != self.n_experts or (w.dim() == 3 and w.shape[1] != self.n_layers):
            raise AdapterError(f"mixture weights must be [batch, {self.n_experts}] or "
                               f"[batch, {self.n_layers}, {self.n_experts}] (experts: {', '.join(self.expert_names)}), "
                               f"got {list(w.shape)}")
        device = self._layers[0][1].lora_A[self._held(self._layers[0][1])[0]].weight.device
        previous, self._weights = self._weights, w.to(device)
        self._rank_weights = {}
        try:
            yield
        finally:
            self._weights = previous
            self._rank_weights = {}

    def remove(self) -> None:
        """Give every LoRA layer peft's own forward back (the mixture stops working)."""
        for _, module in self._layers:
            module.__dict__.pop("forward", None)
        self._layers = []
        self._stacks = {}
        self._layouts = []
        self._rank_weights = {}

    def _has_dropout(self, module: Any) -> bool:
        return any(not isinstance(module.lora_dropout[e], torch.nn.Identity) for e in self._held(module))

    def _stacked_delta(self, module: Any, index: int, layer_w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """All experts' deltas in two matmuls: ``x`` through every expert's ``A`` stacked
        (``[rank_total, in]``), each rank row scaled by its expert's weight for the input times the
        expert's ``scaling``, then through every ``B`` side by side (``[out, rank_total]``).

        The same sum as one delta per expert, with 2 matmuls instead of 2 per expert: on a small
        model the per-call overhead of many small matmuls, not their FLOPs, is what costs. Used
        where dropout does nothing (inference); training with LoRA dropout keeps one dropout per
        expert and takes the per-expert path.
        """
        stacked = self._stacks.get(index)
        if stacked is None:
            # Built outside inference mode even when first needed by generation: tensors made
            # under torch.inference_mode() could not take part in a later training step.
            with torch.inference_mode(False):
                stacked = self._stacks[index] = self._stack(module)
        a, b, owner, scaling = stacked
        xe = module._cast_input_dtype(x, a.dtype)
        # One weight per rank row and input; without gradients (generation) the same weights serve
        # every layer of one layout for the whole block, so they are computed once.
        reuse = layer_w is self._weights and not torch.is_grad_enabled()
        key = (id(owner), x.shape[0], x.dim())
        rank_w = self._rank_weights.get(key) if reuse else None
        if rank_w is None:
            if layer_w.shape[0] != x.shape[0]:  # repeats of each input (num_return_sequences)
                layer_w = layer_w.repeat_interleave(x.shape[0] // layer_w.shape[0], dim=0)
            rank_w = layer_w.to(a.dtype)[:, owner] * scaling  # [batch, rank_total]
            rank_w = rank_w.view(rank_w.shape[0], *([1] * (x.dim() - 2)), rank_w.shape[1])
            if reuse:
                self._rank_weights[key] = rank_w
        hidden = torch.nn.functional.linear(xe, a)
        return torch.nn.functional.linear(hidden * rank_w, b)

    def _stack(self, module: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The layer's experts' A stacked, B side by side, each rank row's expert and scaling."""
        held = [(e, expert) for e, expert in enumerate(self.expert_names) if expert in module.lora_A]
        a = torch.cat([module.lora_A[expert].weight.detach() for _, expert in held], dim=0)
        b = torch.cat([module.lora_B[expert].weight.detach() for _, expert in held], dim=1)
        ranks = [module.lora_A[expert].weight.shape[0] for _, expert in held]
        owner = torch.cat([torch.full((r,), e) for (e, _), r in zip(held, ranks)])
        scaling = torch.cat([torch.full((r,), float(module.scaling[expert])) for (_, expert), r in zip(held, ranks)])
        owner, scaling = owner.to(a.device), scaling.to(a.device, a.dtype)
        for known_owner, known_scaling in self._layouts:
            if (known_owner.shape == owner.shape and known_scaling.dtype == scaling.dtype
                    and torch.equal(known_owner, owner) and torch.equal(known_scaling, scaling)):
                return a, b, known_owner, known_scaling
        self._layouts.append((owner, scaling))
        return a, b, owner, scaling

    def _held(self, module: Any) -> list[str]:
        return [e for e in self.expert_names if e in module.lora_A]

    def _forward_of(self, module: Any, index: int) -> Any:
        original = type(module).forward.__get__(module)

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            w = self._weights
            if w is None or module.disable_adapters:
                return original(x, *args, **kwargs)
            return self._mixed(module, index, w, x, *args, **kwargs)

        return forward

    def _mixed(self, module: Any, index: int, w: torch.Tensor, x: torch.Tensor, *args: Any,
               **kwargs: Any) -> torch.Tensor:
        if module.merged:
            raise AdapterError("a mixture cannot run on merged LoRA layers; unmerge the adapters first")
        if kwargs.pop("adapter_names", None) is not None:
            raise AdapterError("adapter_names (peft's mixed batches) cannot be combined with a mixture")
        for key in ("alora_offsets",):  # peft's variant arguments, never for the base layer
            kwargs.pop(key, None)
        result = module.base_layer(x, *args, **kwargs)
        result_dtype = result.dtype
        layer_w = w[:, index, :] if w.dim() == 3 else w
        if x.shape[0] % layer_w.shape[0]:
            raise AdapterError(f"the model's batch of {x.shape[0]} inputs does not fit mixture weights "
                               f"for {layer_w.shape[0]} inputs")
        if not (module.training and self._has_dropout(module)):
            return (result + self._stacked_delta(module, index, layer_w, x)).to(result_dtype)
        if x.shape[0] != layer_w.shape[0]:
            layer_w = layer_w.repeat_interleave(x.shape[0] // layer_w.shape[0], dim=0)
        for e, expert in enumerate(self.expert_names):
            if expert not in module.lora_A:  # an expert need not adapt every layer
                continue
            lora_a, lora_b = module.lora_A[expert], module.lora_B[expert]
            xe = module._cast_input_dtype(x, lora_a.weight.dtype)
            delta = lora_b(lora_a(module.lora_dropout[expert](xe))) * module.scaling[expert]
            # The same expression as peft's forward, so a one-hot weight reproduces it exactly.
            scale = layer_w[:, e].to(delta.dtype).view(-1, *([1] * (delta.dim() - 1)))
            result = result + delta * scale
        return result.to(result_dtype)


__all__ = ["MixtureOfLoRA", "load_experts"]
