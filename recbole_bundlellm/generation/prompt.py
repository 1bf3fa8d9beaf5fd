"""Prompts in the AICL format: products as ``{'product1': title, ...}``, the answer as
``{'bundle1': ['product1', ...], ...}``. Zero-shot, or one-shot with a worked example."""

from __future__ import annotations

from collections.abc import Sequence

from recbole_bundlellm.data.sessions import Session

PROMPT_VERSION = "aicl-v1"

SYSTEM = (
    "You are an expert shopping assistant. A bundle is a set of at least two products from "
    "one shopping session that the user bought together for one intent."
)
TASK = (
    "Find the bundles in this session. Answer only with a Python dict in the format "
    "{'bundle number': ['product number', ...]}, for example "
    "{'bundle1': ['product1', 'product3'], 'bundle2': ['product2', 'product4']}. "
    "Use only the products listed. A product may belong to no bundle."
)

Message = dict[str, str]


def shorten(title: str, max_words: int | None) -> str:
    words = title.split()
    if max_words is None or len(words) <= max_words:
        return " ".join(words)
    return " ".join(words[:max_words])


def products_dict(session: Session, max_title_words: int | None = None) -> str:
    """``{'product1': 'title', ...}`` in session order."""
    return repr({f"product{i + 1}": shorten(t, max_title_words) for i, t in enumerate(session.titles)})


def answer_dict(session: Session) -> str:
    """The ground-truth bundles of a session written as the expected answer."""
    position = session.positions
    answer = {
        f"bundle{k + 1}": [f"product{position[i] + 1}" for i in session.in_session_order(b)]
        for k, b in enumerate(session.bundles)
    }
    return repr(answer)


def user_turn(session: Session, max_title_words: int | None) -> str:
    return f"Products in the session: {products_dict(session, max_title_words)}\n{TASK}"


def build_messages(
    session: Session,
    examples: Sequence[Session] = (),
    *,
    max_title_words: int | None = 12,
    answer_prefix: str = "",
) -> list[Message]:
    """Chat messages for one session; each example becomes a solved user/assistant exchange.

    A non-empty ``answer_prefix`` starts the assistant's answer (e.g. ``"{'bundle1': ["``), which
    holds small models to the answer format; the model continues from it.
    """
    messages: list[Message] = [{"role": "system", "content": SYSTEM}]
    for example in examples:
        if not example.bundles:
            raise ValueError(f"example session {example.session_id} has no ground-truth bundles")
        messages.append({"role": "user", "content": user_turn(example, max_title_words)})
        messages.append({"role": "assistant", "content": answer_dict(example)})
    messages.append({"role": "user", "content": user_turn(session, max_title_words)})
    if answer_prefix:
        messages.append({"role": "assistant", "content": answer_prefix})
    return messages
