"""How much memory training a student needs: a documented approximation, and an architecture
built on the meta device (shapes only, nothing allocated) for a model too large for this machine.

The estimate (``bundlellm plan``) adds up, at the configured dtype, batch and sequence length:

- **weights**: every frozen parameter at its element size (4-bit NF4 weights: half a byte per
  parameter of the blocks' linear layers, plus their double-quantised scales: ~0.52 B);
- **adapters**: the trainable parameters (peft keeps LoRA weights in float32);
- **gradients**: one per trainable parameter, at its element size;
- **optimizer**: AdamW's two float32 states (``exp_avg``, ``exp_avg_sq``) per trainable parameter;
- **activations**: what backward needs, per token of the longest padded batch, for each block it
  goes through (from the lowest adapted block up to the block whose output is read: the blocks
  below are frozen and keep nothing), in dtype elements: 4h (the two norms' inputs and outputs)
  + h + 2kv (queries, keys, values) + 2h (attention output, and its input to ``o_proj``) + 4i
  (the MLP's gate, up, activation and product), plus per adapted projection its dropped-out input
  (when ``lora_dropout`` > 0) with its mask (a byte on CUDA, an element on a CPU) and its rank-r
  intermediate; eager attention (and sdpa on a CPU, whose padded batches take the math kernel)
  adds its probabilities, ``heads x seq^2`` per sequence in float32 (and in dtype). With ``gradient_checkpointing`` a block
  keeps only its input (h) and one block's activations are rebuilt at a time. One more block's
  worth covers backward's working buffers, and the LM head runs on the target tokens only (see
  :func:`~recbole_bundlellm.llm.batches.answer_loss`): dtype + two float32 copies of the
  vocabulary's logits per target token.

It leaves out the framework's own memory (the CUDA context, allocator caching, the Python
process); ``benchmarks/bench_plan.py`` checks it against the measured peak.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from recbole_bundlellm.settings import SettingsError

GIB = 1024**3
#: Bytes per parameter of a 4-bit NF4 weight with double-quantised scales (bitsandbytes).
NF4_BYTES = 0.516  # half a byte, plus the double-quantised scales of each block of 64


@dataclass(frozen=True)
class Shape:
    """What the activation estimate reads of a decoder's config."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_dim: int
    vocab: int

    @classmethod
    def of(cls, config: Any) -> Shape:
        heads = int(config.num_attention_heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        return cls(int(config.num_hidden_layers), int(config.hidden_size), int(config.intermediate_size), heads,
                   kv_heads * head_dim, int(config.vocab_size))


@dataclass(frozen=True)
class Batch:
    """The batch the peak is estimated at: sequences, padded length, target tokens."""

    sequences: int
    length: int
    target_tokens: int


@dataclass(frozen=True)
class Training:
    """The training settings the estimate depends on."""

    dtype: torch.dtype
    trained_blocks: int          # blocks backward goes through
    adapted_inputs: int          # per block: the summed input width of the adapted projections
    adapted_projections: int     # per block: how many projections have adapters
    rank: int
    lora_dropout: float
    gradient_checkpointing: bool
    eager_attention: bool
    lm_head: bool                # the loss reads the LM head (BundleSFT) or not (PairSFT's pair head)
    #: Training on a CPU: dropout keeps a float mask (CUDA's fused kernel a byte), and sdpa with a
    #: padding mask takes its math kernel, which keeps the attention probabilities as eager does.
    cpu: bool = False


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of each part of a training step's memory (see the module docstring)."""

    weights: int
    adapters: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.adapters + self.gradients + self.optimizer + self.activations

    @property
    def training(self) -> int:
        """What a training step adds to the loaded model: gradients, optimizer states, activations."""
        return self.gradients + self.optimizer + self.activations

    def to_json(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total, "training": self.training}


def element_size(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


def parameter_bytes(model: torch.nn.Module, four_bit: bool = False) -> tuple[int, int]:
    """(frozen, trainable) bytes of ``model``'s parameters at their own dtype (a meta model's too);
    ``four_bit``: frozen linear weights of the blocks counted as NF4, as bitsandbytes stores them."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    quantised = set()
    if four_bit:
        quantised = {id(m.weight) for m in model.modules()
                     if isinstance(m, torch.nn.Linear) and m is not head and not m.weight.requires_grad}
    frozen = trainable = 0
    for p in model.parameters():
        if p.requires_grad:
            trainable += p.numel() * p.element_size()
        elif id(p) in quantised:
            frozen += int(p.numel() * NF4_BYTES)
        else:
            frozen += p.numel() * p.element_size()
    return frozen, trainable


def activation_bytes(shape: Shape, batch: Batch, training: Training) -> int:
    """The activations backward keeps for ``batch`` (the module docstring's approximation)."""
    d = element_size(training.dtype)
    tokens = batch.sequences * batch.length
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_dim
    per_token = d * (4 * h + h + 2 * kv + 2 * h + 4 * i)
    if training.lora_dropout > 0:  # the dropped-out copy of each adapted input, and its mask
        per_token += (d + (d if training.cpu else 1)) * training.adapted_inputs
    per_token += d * training.rank * training.adapted_projections
    block = tokens * per_token
    if training.eager_attention or training.cpu:  # softmax kept in float32 (and cast to dtype)
        block += batch.sequences * shape.heads * batch.length**2 * (4 if d == 4 else 4 + d)
    if training.gradient_checkpointing:
        kept = training.trained_blocks * tokens * h * d + block  # the inputs, and one block rebuilt
    else:
        kept = training.trained_blocks * block
    head = batch.target_tokens * shape.vocab * (d + 8) + tokens * 2 * h * d if training.lm_head else 0
    return int(kept + block + head)  # + one block of backward's working buffers


def estimate(model: torch.nn.Module, shape: Shape, batch: Batch, training: Training,
             four_bit: bool = False) -> MemoryEstimate:
    """The memory of one training step of ``model`` (real or on the meta device) on ``batch``."""
    frozen, trainable = parameter_bytes(model, four_bit)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return MemoryEstimate(weights=frozen, adapters=trainable, gradients=trainable, optimizer=8 * n_trainable,
                          activations=activation_bytes(shape, batch, training))


def adapted_widths(model: torch.nn.Module, block: torch.nn.Module) -> tuple[int, int, int]:
    """(summed input width, count, rank) of the LoRA-adapted projections in one ``block``."""
    width = count = rank = 0
    for module in block.modules():
        lora_a = getattr(module, "lora_A", None)
        if isinstance(lora_a, torch.nn.ModuleDict) and len(lora_a):
            layer = next(iter(lora_a.values()))
            width, count, rank = width + layer.in_features, count + 1, layer.out_features
    return width, count, rank


def read_config(path: str | Path) -> Any:
    """A transformers config from a ``config.json`` (or a folder holding one), without weights;
    a file that is no such config is a :class:`SettingsError` naming it."""
    path = Path(path).expanduser()
    file = path / "config.json" if path.is_dir() else path
    try:
        values = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SettingsError(f"--model-config {path}: cannot read a config.json there ({exc})") from None
    if not isinstance(values, dict) or "model_type" not in values:
        raise SettingsError(f"--model-config {path}: not a transformers config.json (it has no model_type)")
    if values.get("auto_map"):
        raise SettingsError(f"--model-config {path}: it asks for the model's own code (auto_map), which this "
                            "project never runs")
    from transformers import AutoConfig

    kind = values.pop("model_type")
    try:
        return AutoConfig.for_model(kind, **values)
    except (ValueError, KeyError, TypeError) as exc:
        raise SettingsError(f"--model-config {path}: transformers cannot build a {kind!r} config ({exc})") from None


def meta_model(config: Any, dtype: torch.dtype) -> torch.nn.Module:
    """The causal LM of ``config`` on the meta device at ``dtype``: every shape, no memory."""
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, dtype=dtype)
    except ValueError as exc:  # an architecture transformers has no causal LM for
        raise SettingsError(f"--model-config: no causal LM for this config ({exc})") from None


__all__ = ["Batch", "GIB", "MemoryEstimate", "Shape", "Training", "activation_bytes", "adapted_widths",
           "element_size", "estimate", "meta_model", "parameter_bytes", "read_config"]
