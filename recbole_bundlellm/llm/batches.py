"""Supervised fine-tuning batches: prompt + target token ids, loss on the target tokens only.

Examples are bucketed by length (sorted, cut into batches, the batches shuffled per epoch with a
seeded generator) so a CPU spends its time on real tokens, not on padding, and the order of an
epoch depends only on (seed, epoch): a resumed training sees the same batches.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

IGNORE_INDEX = -100  # labels torch's cross-entropy skips: the prompt's tokens and the padding


@dataclass(frozen=True)
class SFTExample:
    """One training example: the prompt's token ids and the target's (answer + end of turn).

    ``weight`` scales the whole example's loss; ``target_weights`` (one per target token, or
    ``None`` for all 1) scales single tokens, e.g. the rarer labels of a tags answer.
    """

    session_id: str
    prompt_ids: tuple[int, ...]
    target_ids: tuple[int, ...]
    weight: float = 1.0
    target_weights: tuple[float, ...] | None = None

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.target_ids)


def cut_to_length(example: SFTExample, max_tokens: int | None) -> tuple[SFTExample, bool]:
    """The example within ``max_tokens`` (the prompt cut from the left, the target kept whole);
    ``(example, was_cut)``. A target alone longer than the limit keeps its first tokens."""
    if max_tokens is None or len(example) <= max_tokens:
        return example, False
    room = max_tokens - len(example.target_ids)
    if room <= 0:
        weights = None if example.target_weights is None else example.target_weights[:max_tokens]
        return replace(example, prompt_ids=(), target_ids=example.target_ids[:max_tokens], target_weights=weights), True
    return replace(example, prompt_ids=example.prompt_ids[-room:]), True


def class_balanced_weights(token_classes: Sequence[Sequence[str | None]], power: float = 1.0
                           ) -> list[tuple[float, ...]]:
    """Per-token loss weights from per-token classes (``None``: not a class token, weight 1).

    A class's tokens get ``(n / (k * n_class)) ** power`` (``n`` class tokens of ``k`` classes in
    all examples): with ``power`` 1 every class weighs the same in the loss, so the most common
    label stops being the cheapest answer; ``power`` 0 leaves every weight at 1.
    """
    counts: dict[str, int] = {}
    for classes in token_classes:
        for c in classes:
            if c is not None:
                counts[c] = counts.get(c, 0) + 1
    total = sum(counts.values())
    weight = {c: (total / (len(counts) * n)) ** power for c, n in counts.items()}
    return [tuple(1.0 if c is None else weight[c] for c in classes) for classes in token_classes]


def epoch_batches(examples: Sequence[SFTExample], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Indices of ``examples`` in batches of similar length, in a seeded order for ``epoch``."""
    rng = random.Random(f"bundlellm-sft:{seed}:{epoch}")
    # Shuffle before the stable sort, so equal lengths do not always meet the same neighbours.
    order = list(range(len(examples)))
    rng.shuffle(order)
    order.sort(key=lambda i: len(examples[i]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: Sequence[SFTExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask``, ``labels`` (prompt and padding ignored),
    ``weights`` (one per example), ``token_weights`` (aligned with ``labels``) and
    ``prompt_lengths`` (the prompt is each row's first tokens: a router reads it)."""
    width = max(len(e) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    token_weights = torch.ones((len(examples), width), dtype=torch.float32)
    for row, e in enumerate(examples):
        ids = list(e.prompt_ids) + list(e.target_ids)
        input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[row, :len(ids)] = 1
        labels[row, len(e.prompt_ids):len(ids)] = torch.tensor(e.target_ids, dtype=torch.long)
        if e.target_weights is not None:
            token_weights[row, len(e.prompt_ids):len(ids)] = torch.tensor(e.target_weights, dtype=torch.float32)
    weights = torch.tensor([e.weight for e in examples], dtype=torch.float32)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "weights": weights,
            "token_weights": token_weights,
            "prompt_lengths": torch.tensor([len(e.prompt_ids) for e in examples], dtype=torch.long)}


def _decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """The transformer body and the output head of a causal LM (through a peft wrapper), or
    ``None`` when the model does not expose them."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        decoder, head = base.get_decoder(), base.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    return (decoder, head) if decoder is not None and head is not None else None


def left_padded(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of ``prompts`` padded on the left to the longest (generation
    and the router's prompt pass read the last position of each row)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt):] = torch.as_tensor(list(prompt), dtype=torch.long)
            mask[row, width - len(prompt):] = 1
    return ids, mask


def answer_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Mean causal-LM cross-entropy over the target tokens of ``batch`` (each token weighted by
    its example's weight times its own), and the number of target tokens.

    The output head runs only at the positions that predict a target token: answers are a few
    percent of the tokens, and the head (vocabulary x hidden) is a fifth of a small model's
    compute and most of its activation memory.
    """
    device = next(p for p in model.parameters()).device
    input_ids, attention = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    labels = batch["labels"][:, 1:].to(device)  # position t predicts token t+1
    mask = labels != IGNORE_INDEX
    weights = batch["weights"].to(device)[:, None].expand_as(labels)
    if "token_weights" in batch:
        weights = weights * batch["token_weights"][:, 1:].to(device)
    weights = weights[mask]
    parts = _decoder_and_head(model)
    if parts is not None:
        decoder, head = parts
        hidden = decoder(input_ids=input_ids, attention_mask=attention).last_hidden_state[:, :-1]
        logits = head(hidden[mask]).float()
    else:
        logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1][mask].float()
    per_token = torch.nn.functional.cross_entropy(logits, labels[mask], reduction="none")
    tokens = int(mask.sum())
    return (per_token * weights).sum() / weights.sum().clamp(min=1e-8), tokens


__all__ = ["IGNORE_INDEX", "SFTExample", "answer_loss", "class_balanced_weights", "collate", "cut_to_length",
           "epoch_batches", "left_padded"]
