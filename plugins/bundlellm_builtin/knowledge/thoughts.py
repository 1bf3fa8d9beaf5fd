"""Plugin ``thoughts``: the teacher's step-by-step reasoning from products to intents to bundles.

Per training session the teacher sees the products, the ground-truth bundles and their intents,
and explains how the products lead to the user's intents and to these bundles. The stored text
is that reasoning followed by the ground-truth answer dict: the chain of thought a student is
fine-tuned on or shown, ending in the right answer.

The reasoning is kept only when it is consistent with the ground truth (:func:`check_thought`):

1. it has at least ``min_words`` words;
2. every product number it mentions (``product7``, ``Product 7``) exists in the session;
3. it refers to every ground-truth bundle, either by a content word of the bundle's intent
   (plurals folded: "battery" matches "Batteries") or by naming all of the bundle's products;
4. any bundle it writes out itself (a ``[...]`` list or dict the answer parser reads) is one of
   the ground-truth bundles.

These hold for a faithful explanation even from a small model (it only has to name each intent
or its products), and they reject empty, cut-off, hallucinated-product and contradicting answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from bundlellm_builtin.knowledge.feedback import truth_positions
from bundlellm_builtin.knowledge.words import WORD_RE, fold_plural
from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.generation.parser import parse_bundles
from recbole_bundlellm.generation.prompt import SYSTEM, answer_dict, products_dict
from recbole_bundlellm.extension.hookspecs import hookimpl
from recbole_bundlellm.knowledge.extractor import (
    Extraction,
    KnowledgeExtractor,
    Message,
    Teacher,
)
from recbole_bundlellm.knowledge.records import KnowledgeItem, KnowledgeRecord
from recbole_bundlellm.settings import ranged

PROMPT_VERSION = "thoughts-v1"

REQUEST = (
    "Explain step by step, in a few short sentences, how to go from these products to the user's "
    "intents and to these bundles. For each bundle, name its intent and its products (e.g. product1)."
)

_PRODUCT_RE = re.compile(r"\bproduct\s*[_#-]?\s*(\d+)", re.IGNORECASE)
_FENCE_RE = re.compile(r"```[a-zA-Z]*")
# Intent words too common to show that the reasoning refers to one particular bundle.
_STOPWORDS = frozenset(
    "a an the and or of to in on for with by is are from into your my our his her its their this that "
    "set up use using used new other others some all any".split()
)


@dataclass(frozen=True)
class ThoughtsSettings:
    """Settings of the ``thoughts`` YAML key."""

    max_tokens: int = ranged(200, min=1)  # (int) tokens for the reasoning
    min_words: int = ranged(20, min=1)  # (int) shortest reasoning kept, in words
    max_title_words: int = ranged(12, min=1)  # (int) product titles are cut to this many words


def intent_words(intent: str) -> frozenset[str]:
    """The content words of an intent (lowercased, plurals folded, stopwords and 1-2 letter words dropped)."""
    return frozenset(fold_plural(w) for w in WORD_RE.findall(intent.lower()) if len(w) > 2 and w not in _STOPWORDS)


def bundle_lines(session: Session) -> list[str]:
    """``bundle1 (intent: ...): product1, product3`` per ground-truth bundle, products numbered from 1."""
    lines = []
    intents = session.intents or ("",) * len(session.bundles)
    for k, (bundle, intent) in enumerate(zip(truth_positions(session), intents), start=1):
        products = ", ".join(f"product{p + 1}" for p in bundle)
        label = f" (intent: {intent.strip()})" if intent and intent.strip() else ""
        lines.append(f"bundle{k}{label}: {products}")
    return lines


def build_thought_messages(session: Session, max_title_words: int | None = 12) -> list[Message]:
    """The request: products, ground-truth bundles with intents, and what to explain."""
    user = (f"Products in the session: {products_dict(session, max_title_words)}\n"
            f"The user bought these bundles:\n" + "\n".join(bundle_lines(session)) + f"\n{REQUEST}")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def clean_reasoning(text: str) -> str:
    """The answer without code fences, trailing spaces and runs of blank lines."""
    text = _FENCE_RE.sub("", text or "")
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


@dataclass
class ThoughtCheck:
    """The outcome of :func:`check_thought`: ``problems`` is empty when the reasoning is consistent."""

    n_words: int
    mentioned: list[int]  # product numbers (1-based) in order of first mention
    references: list[str | None]  # per ground-truth bundle: "intent", "products" or None
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_thought(reasoning: str, session: Session, min_words: int) -> ThoughtCheck:
    """Check a reasoning against the session's ground truth (the four rules of the module doc)."""
    n_items = len(session.item_ids)
    n_words = len(reasoning.split())
    mentioned: list[int] = []
    for match in _PRODUCT_RE.finditer(reasoning):
        number = int(match.group(1)[:9])
        if number not in mentioned:
            mentioned.append(number)
    words = {fold_plural(w) for w in WORD_RE.findall(reasoning.lower())}
    truth = truth_positions(session)
    intents = session.intents or ("",) * len(truth)
    references: list[str | None] = []
    for bundle, intent in zip(truth, intents):
        if intent_words(intent) & words:
            references.append("intent")
        elif all(p + 1 in mentioned for p in bundle):
            references.append("products")
        else:
            references.append(None)

    problems = []
    if n_words < min_words:
        problems.append(f"reasoning has {n_words} words (< {min_words})")
    unknown = [n for n in mentioned if not 1 <= n <= n_items]
    if unknown:
        problems.append(f"mentions products that do not exist: {', '.join(f'product{n}' for n in unknown)}")
    missed = [k for k, ref in enumerate(references, start=1) if ref is None]
    if missed:
        problems.append(f"does not refer to ground-truth bundle(s) {', '.join(map(str, missed))} "
                        "(neither by intent nor by all products)")
    written = parse_bundles(reasoning, n_items)
    if not written.failed:
        truth_sets = {frozenset(b) for b in truth}
        wrong = [b for b in written.bundles if frozenset(b) not in truth_sets]
        if wrong:
            shown = "; ".join(", ".join(f"product{p + 1}" for p in b) for b in wrong)
            problems.append(f"writes out bundles that are not in the ground truth: {shown}")
    return ThoughtCheck(n_words, mentioned, references, problems)


class ThoughtsExtractor(KnowledgeExtractor):
    """Teacher reasoning from products to intents to the ground-truth bundles, checked for consistency."""

    name: ClassVar[str] = "thoughts"
    description: ClassVar[str] = "teacher step-by-step reasoning towards the ground-truth bundles (checked)"
    version: ClassVar[str] = PROMPT_VERSION
    Settings: ClassVar[type] = ThoughtsSettings
    needs_teacher: ClassVar[bool] = True

    def extract_session(self, session: Session, teacher: Teacher | None) -> Extraction:
        """One teacher call. Content keys: ``raw`` (the answer), ``reasoning`` (cleaned),
        ``answer`` (the ground-truth answer dict), ``n_words``, ``mentioned_products``,
        ``references`` (how each ground-truth bundle is referred to) and ``problems``."""
        if teacher is None:
            raise ValueError("the thoughts extractor needs a teacher")
        if not session.bundles:
            return Extraction.failed("session has no ground-truth bundle")
        s = self.settings
        raw = teacher.chat(build_thought_messages(session, s.max_title_words), max_tokens=s.max_tokens)
        reasoning = clean_reasoning(raw)
        check = check_thought(reasoning, session, s.min_words)
        answer = answer_dict(session)
        content: dict[str, Any] = {
            "raw": raw,
            "reasoning": reasoning,
            "answer": answer,
            "n_words": check.n_words,
            "mentioned_products": check.mentioned,
            "references": check.references,
            "problems": check.problems,
        }
        if not check.ok:
            return Extraction.failed("inconsistent reasoning: " + "; ".join(check.problems), **content)
        return Extraction("ok", content, f"{reasoning}\nAnswer: {answer}")

    def aggregate(self, records: Sequence[KnowledgeRecord], domain: str) -> list[KnowledgeItem]:
        """One item per ``ok`` record (its session's reasoning and answer), in record order."""
        return [
            KnowledgeItem(kind=self.name, domain=domain, text=r.text, session_id=r.session_id or r.unit,
                          data={"reasoning": r.content.get("reasoning", ""), "answer": r.content.get("answer", "")},
                          scope="session", heading="Reasoning")
            for r in records if r.ok
        ]


@hookimpl
def register_knowledge_extractors(register: Callable[[type[KnowledgeExtractor]], None]) -> None:
    register(ThoughtsExtractor)
