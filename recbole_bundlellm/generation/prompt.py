"""Prompts in the AICL format: products as ``{'product1': title, ...}``, the answer as
``{'bundle1': ['product1', ...], ...}``. Zero-shot, or one-shot with a worked example."""

from __future__ import annotations

from collections.abc import Sequence

from dataclasses import dataclass

from recbole_bundlellm.adaptation.strategy import StudentView
from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.generation.parser import ANSWER_MARK

PROMPT_VERSION = "aicl-v1"
#: ``aicl``: the AICL dict format; ``compact``: numbered lines in, ``[[1, 3], [2, 4]]`` out (about half
#: the tokens, which a fine-tuned student learns faster and trains on sooner).
#: ``tags``: numbered lines in, one label per product out (``1:A 2:A 3:- 4:B``): a decision per product,
#: next to its number, instead of a list whose easiest continuation is the next number.
PROMPT_FORMATS = ("aicl", "compact", "tags")
COMPACT_VERSION = "compact-v1"
TAGS_VERSION = "tags-v1"
#: Bundle labels of the tags format, in order of each bundle's first product; "-" is no bundle.
TAG_LABELS = "ABCDEFGHIJ"
NO_BUNDLE = "-"

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


# --------------------------------------------------------------------------- student views

# Short on purpose: every training example carries them, and prompt tokens are most of the training time.
COMPACT_SYSTEM = "Find the bundles: products bought together for one intent."
COMPACT_TASK = "Bundles as lists of product numbers, e.g. [[1, 3], [2, 4]]:"
TAGS_TASK = "For each product, its bundle (A, B, ...) or - for none, e.g. 1:A 2:B 3:A 4:- 5:B"


@dataclass(frozen=True)
class PromptStyle:
    """How sessions become prompts: the format, title length, whether each product shows its
    category, and an optional start of the answer."""

    format: str = "aicl"
    max_title_words: int | None = 12
    show_categories: bool = False
    answer_prefix: str = ""

    @property
    def version(self) -> str:
        return {"aicl": PROMPT_VERSION, "compact": COMPACT_VERSION, "tags": TAGS_VERSION}[self.format]


def _product_line(session: Session, i: int, style: PromptStyle) -> str:
    title = shorten(session.titles[i], style.max_title_words)
    if style.show_categories and i < len(session.categories) and session.categories[i]:
        return f"{i + 1}. [{session.categories[i]}] {title}"
    return f"{i + 1}. {title}"


def compact_answer(session: Session) -> str:
    """The ground-truth bundles as ``[[1, 3], [2, 4]]`` (1-based positions, session order)."""
    position = session.positions
    return repr([[position[i] + 1 for i in session.in_session_order(b)] for b in session.bundles])


def tags_answer(session: Session, order: Sequence[int] | None = None) -> str:
    """The ground truth as one label per product, letters in order of first use: ``1:A 2:- 3:A``.

    ``order`` (0-based positions) writes the products in another order, e.g. ``3:A 1:A 2:-``:
    trained on shuffled orders, a student cannot score well by repeating the previous label
    (bundles are mostly adjacent in a session) and has to read each product.

    A product in two bundles (14% of Electronic's training sessions have one) takes its first
    bundle's label; a bundle left with a single labelled product is written as ``-``, since a
    one-product "bundle" is no answer.
    """
    bundle_of: dict[str, int] = {}
    firsts = sorted(session.bundles, key=lambda b: min(session.positions[i] for i in b))
    for k, bundle in enumerate(firsts):
        for item in bundle:
            bundle_of.setdefault(item, k)
    sizes: dict[int, int] = {}
    for item in session.item_ids:
        if item in bundle_of:
            sizes[bundle_of[item]] = sizes.get(bundle_of[item], 0) + 1
    letters: dict[int, str] = {}
    tags = []
    for i in (range(len(session)) if order is None else order):
        item = session.item_ids[i]
        k = bundle_of.get(item)
        if k is None or sizes[k] < 2 or len(letters) >= len(TAG_LABELS) and k not in letters:
            tags.append(f"{i + 1}:{NO_BUNDLE}")
            continue
        letters.setdefault(k, TAG_LABELS[len(letters)])
        tags.append(f"{i + 1}:{letters[k]}")
    return " ".join(tags)


def knowledge_block(view: StudentView) -> str:
    """The view's knowledge lines (not its examples) grouped by kind, each kind under its items'
    heading (the kind, capitalised, when they have none); ``""`` when there are none."""
    lines: list[str] = []
    headings: dict[str, str] = {}
    for item in view.knowledge():
        headings.setdefault(item.kind, item.heading or item.kind.capitalize())
    for kind, heading in headings.items():
        lines.append(f"{heading}:")
        lines.extend(f"- {item.text}" for item in view.knowledge(kind))
    return "\n".join(lines)


def _user_text(session: Session, style: PromptStyle, knowledge: str) -> str:
    extra = f"{knowledge}\n" if knowledge else ""
    if style.format == "aicl":
        return f"Products in the session: {products_dict(session, style.max_title_words)}\n{extra}{TASK}"
    products = "\n".join(_product_line(session, i, style) for i in range(len(session)))
    return f"Products:\n{products}\n{extra}{COMPACT_TASK if style.format == 'compact' else TAGS_TASK}"


def answer_text(session: Session, style: PromptStyle, reasoning: str | None = None,
                order: Sequence[int] | None = None) -> str:
    """What the student should answer for a labelled session (with its reasoning first, if any);
    ``order`` writes a tags answer's products in that order."""
    if style.format == "tags":
        answer = tags_answer(session, order)
    else:
        answer = answer_dict(session) if style.format == "aicl" else compact_answer(session)
    return f"Reasoning: {reasoning.strip()}\n{ANSWER_MARK} {answer}" if reasoning else answer


def view_messages(session: Session, view: StudentView, style: PromptStyle) -> list[Message]:
    """Chat messages for a session seen through a :class:`StudentView`: each example a solved
    exchange (with its reasoning where the view has one), the knowledge lines before the task."""
    if style.format not in PROMPT_FORMATS:
        raise ValueError(f"prompt format {style.format!r} is not one of {', '.join(PROMPT_FORMATS)}")
    system = SYSTEM if style.format == "aicl" else COMPACT_SYSTEM
    messages: list[Message] = [{"role": "system", "content": system}]
    for example in view.examples:
        if not example.bundles:
            raise ValueError(f"example session {example.session_id} has no ground-truth bundles")
        messages.append({"role": "user", "content": _user_text(example, style, "")})
        messages.append({"role": "assistant", "content": answer_text(example, style, view.thought_of(example))})
    messages.append({"role": "user", "content": _user_text(session, style, knowledge_block(view))})
    if style.answer_prefix:
        messages.append({"role": "assistant", "content": style.answer_prefix})
    return messages
