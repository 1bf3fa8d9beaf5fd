"""Chat prompts as the student's tokenizer reads them: the rendered text and its token ids.

What training examples, token budgets and RouteDK's router measure is exactly what the
``transformers`` backend feeds the model, so they share these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from recbole_bundlellm.generation.backend import Messages


def render_chat(tokenizer: Any, messages: Messages) -> str:
    """The prompt text of one chat: the tokenizer's chat template, or a plain ``role: content`` join.

    A final assistant message is a started answer that the model continues (its text is not
    repeated in the completion).
    """
    if isinstance(messages, str):
        raise TypeError("a prompt is a list of {'role': ..., 'content': ...} messages, not a str")
    started = bool(messages) and messages[-1]["role"] == "assistant"
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=not started,
            continue_final_message=started,
        )
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join(lines if started else [*lines, "assistant:"])


def encode_texts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """The token ids of rendered prompts, never cut."""
    # A chat template already writes the special tokens; adding BOS again would double it.
    templated = bool(getattr(tokenizer, "chat_template", None))
    encoded = tokenizer(list(texts), add_special_tokens=not templated, padding=False)
    return [list(ids) for ids in encoded["input_ids"]]


def prompt_token_ids(tokenizer: Any, messages: Messages) -> list[int]:
    """The token ids of one rendered prompt, never cut (what training and token budgets measure)."""
    return encode_texts(tokenizer, [render_chat(tokenizer, messages)])[0]


def cut_prompt(ids: Sequence[int], limit: int | None) -> list[int]:
    """``ids`` cut from the left to ``limit`` tokens (the end holds the generation prompt and the
    latest turn, which matter most); all of them when ``limit`` is ``None``."""
    return list(ids) if limit is None else list(ids[-limit:])


__all__ = ["cut_prompt", "encode_texts", "prompt_token_ids", "render_chat"]
