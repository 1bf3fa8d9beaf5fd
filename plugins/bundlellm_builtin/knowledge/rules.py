"""Plugin ``rules``: the AICL self-reflection loop, ending in general rules for finding bundles.

Per training session, in one conversation with the teacher:

1. the teacher proposes bundles (the zero-shot AICL prompt of :func:`build_messages`);
2. feedback computed against the ground truth (:mod:`.feedback`) is the next user turn;
3. the teacher revises its answer (skipped when ``revise`` is off or the first answer was all
   correct);
4. the teacher is shown the correct answer and asked for a short numbered list of *general*
   rules for finding bundles (not about this session).

The bundle answers (turns 1 and 3) are JSON: they are asked with a schema (``response_schema``:
``{"bundles": [["product1", "product3"], ...]}``, each entry one of the session's products), which
an endpoint with structured outputs holds the answer to; the answer parser reads it as it reads a
free-text dict. The rules (turn 4) are a numbered list of sentences, asked in free text.
The rules are parsed defensively; a session without one usable rule is failed (raw answers kept).
``difficulty`` = 1 - exact F1 of the teacher's *first* answer, kept even on failed records, is
what :meth:`RulesExtractor.difficulty` tells the difficulty sampler. ``aggregate`` merges
near-duplicate rules across the selected sessions and ranks them by how many sessions state them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from bundlellm_builtin.knowledge.feedback import (
    SessionFeedback,
    exact_f1,
    feedback_for_answer,
    render_feedback,
    truth_positions,
)
from bundlellm_builtin.knowledge.words import WORD_RE, fold_plural
from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.generation.parser import parse_bundles
from recbole_bundlellm.generation.prompt import answer_dict, build_messages
from recbole_bundlellm.extension.hookspecs import hookimpl
from recbole_bundlellm.knowledge.extractor import (
    Extraction,
    KnowledgeExtractor,
    Message,
    Teacher,
)
from recbole_bundlellm.knowledge.records import KnowledgeItem, KnowledgeRecord
from recbole_bundlellm.settings import ranged
from recbole_bundlellm.teacher.calls import ResponseSchema
from recbole_bundlellm.teacher.errors import TeacherError

PROMPT_VERSION = "rules-v1"

REVISE_CLOSING = "Please revise your answer. Answer only with the dict."
RULES_REQUEST = (
    "The correct answer is {answer}. "
    "Now write up to {n} general rules you learned for finding bundles in any shopping session, "
    "not about these products. Answer as a numbered list, one short sentence per rule."
)

#: A bundle answer as JSON (OpenAI's strict form): at least one bundle, each a list of at least
#: two product names (the prompt's definition of a bundle; without the bounds the embedded
#: teacher often answers ``{"bundles": []}``). :meth:`RulesExtractor.response_schema` narrows the
#: names to the session's products.
ANSWER_SCHEMA: Mapping[str, Any] = MappingProxyType({
    "type": "object",
    "properties": {"bundles": {"type": "array", "minItems": 1,
                               "items": {"type": "array", "minItems": 2, "items": {"type": "string"}}}},
    "required": ["bundles"],
    "additionalProperties": False,
})

#: A usable rule has this many words at least / at most.
MIN_RULE_WORDS, MAX_RULE_WORDS = 4, 40

# A list marker: "1." "2)" "Rule 3:" "Rule:" or a bullet.
_MARKER_RE = re.compile(
    r"^\s*(?:(?:rule\s*)?\d{1,2}\s*[.):\]-]|rule\s*\d{0,2}\s*:|[-*\u2022\u2023\u25e6+])\s*", re.IGNORECASE
)
# A rule about one session's products ("product3 goes with product5") is no general rule.
_PRODUCT_REF_RE = re.compile(r"\bproduct\s*_?#?\s*\d+", re.IGNORECASE)
_PREAMBLE_RE = re.compile(r"^(?:here|sure|these|the following|general rules|rules)\b.*:\s*$", re.IGNORECASE)
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")
_INLINE_ITEM_RE = re.compile(r"\s+(?=\d{1,2}[.)]\s)")
# Words that carry no meaning for "is this the same rule?".
_STOPWORDS = frozenset(
    "a an the and or of to in on for with by be is are was were that this these those it its as at "
    "from into than then so if can could should may might will would one any each all their they them "
    "you your often usually".split()
)


@dataclass(frozen=True)
class RulesSettings:
    """Settings of the ``rules`` YAML key."""

    max_tokens_answer: int = ranged(160, min=1)  # (int) tokens for each bundle answer (initial and revised)
    max_tokens_rules: int = ranged(200, min=1)  # (int) tokens for the rules answer
    max_rules: int = ranged(5, min=1)  # (int) most rules kept per session
    max_title_words: int = ranged(12, min=1)  # (int) product titles are cut to this many words
    revise: bool = True  # (bool) ask for a revised answer after the feedback
    top_k: int = ranged(10, min=1)  # (int) aggregate keeps this many rules per domain
    # (float) rules whose content-word sets overlap this much are merged
    merge_jaccard: float = ranged(0.6, above=0, max=1)


def _clean_line(line: str) -> str:
    """A line without markdown emphasis, heading marks, quotes and repeated spaces."""
    line = re.sub(r"\*\*|__|`", "", line)  # markdown emphasis, so "**1.** rule" reads "1. rule"
    line = line.strip().lstrip("#>").strip()
    return re.sub(r"\s+", " ", line).strip(" \"'")


def parse_rules(text: str, max_rules: int) -> list[str]:
    """The rules of an answer: numbered or bulleted lines (the sentences of the text when no line is),
    cleaned, without preambles, session-specific lines (naming ``productK``), lines of fewer than
    :data:`MIN_RULE_WORDS` or more than :data:`MAX_RULE_WORDS` words and duplicates; at most
    ``max_rules``."""
    if not isinstance(text, str):
        return []
    # "1. a rule. 2. another rule." on one line is a list too.
    lines = [_clean_line(part) for line in text.splitlines() for part in _INLINE_ITEM_RE.split(line)]
    lines = [line for line in lines if line]
    marked = [line for line in lines if _MARKER_RE.match(line)]
    if marked:
        lines = marked
    else:  # no list at all: take the sentences of the plain text
        lines = [part for line in lines for part in _SENTENCE_RE.split(line) if part.strip()]
    rules: list[str] = []
    seen: set[str] = set()
    for raw in lines:
        rule = _clean_line(_MARKER_RE.sub("", raw, count=1))
        if not rule or _PREAMBLE_RE.match(rule) or rule.endswith(":") or _PRODUCT_REF_RE.search(rule):
            continue
        if "{" in rule or "[" in rule:  # an answer dict, not a rule
            continue
        if not MIN_RULE_WORDS <= len(rule.split()) <= MAX_RULE_WORDS:
            continue
        if rule[0].isalpha():
            rule = rule[0].upper() + rule[1:]
        if rule[-1] not in ".!?":
            rule += "."
        key = normalize_rule(rule)
        if key and key not in seen:
            seen.add(key)
            rules.append(rule)
        if len(rules) >= max_rules:
            break
    return rules


def normalize_rule(rule: str) -> str:
    """Lowercase, numbering and punctuation stripped, spaces collapsed."""
    return " ".join(WORD_RE.findall(_MARKER_RE.sub("", rule.lower(), count=1)))


def rule_tokens(rule: str) -> frozenset[str]:
    """The content words of a rule (stopwords dropped, plurals folded), for near-duplicate tests."""
    words = normalize_rule(rule).split()
    content = frozenset(fold_plural(w) for w in words if w not in _STOPWORDS)
    return content or frozenset(words)


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class RulesExtractor(KnowledgeExtractor):
    """AICL self-reflection with the teacher, distilled into general bundle-finding rules."""

    name: ClassVar[str] = "rules"
    description: ClassVar[str] = "teacher self-reflection (propose, feedback, revise) ending in general rules"
    version: ClassVar[str] = PROMPT_VERSION
    Settings: ClassVar[type] = RulesSettings
    needs_teacher: ClassVar[bool] = True
    response_schemas: ClassVar[Mapping[str, Mapping[str, Any]]] = MappingProxyType({"answer": ANSWER_SCHEMA})

    def response_schema(self, turn: str, session: Session) -> ResponseSchema | None:
        """``answer``: :data:`ANSWER_SCHEMA` with the product names of ``session`` as the only values
        (so a constrained teacher names no product that does not exist)."""
        if turn != "answer":
            return super().response_schema(turn, session)
        products = [f"product{i + 1}" for i in range(len(session.item_ids))]
        bundles = dict(ANSWER_SCHEMA["properties"]["bundles"])
        bundles["items"] = {**bundles["items"], "items": {"type": "string", "enum": products}}
        schema = {**ANSWER_SCHEMA, "properties": {"bundles": bundles}}
        return ResponseSchema(f"{self.name}_answer", schema)

    def extract_session(self, session: Session, teacher: Teacher | None) -> Extraction:
        """Run the loop; content keys: ``answers`` (raw text per turn), ``initial_bundles``,
        ``revised_bundles`` (0-based positions or None), ``feedback`` (structured),
        ``feedback_text``, ``revised_feedback``, ``rules``, ``difficulty``, ``initial_f1``,
        ``revised_f1``. Teacher errors propagate (the distiller records them)."""
        if teacher is None:
            raise ValueError("the rules extractor needs a teacher")
        if not session.bundles:
            return Extraction.failed("session has no ground-truth bundle")
        s = self.settings
        n_items = len(session.item_ids)
        truth = truth_positions(session)

        messages: list[Message] = build_messages(session, max_title_words=s.max_title_words)
        answer_schema = self.response_schema("answer", session)
        first = teacher.chat(list(messages), max_tokens=s.max_tokens_answer, schema=answer_schema)
        first_parse = parse_bundles(first, n_items)
        initial_bundles = None if first_parse.failed else [list(b) for b in first_parse.bundles]
        initial_f1 = exact_f1(initial_bundles, truth)
        feedback = feedback_for_answer(first, session)
        feedback_text = render_feedback(feedback, closing=REVISE_CLOSING if s.revise else "")
        content: dict[str, Any] = {
            "answers": {"initial": first, "revised": None, "rules": None},
            "initial_bundles": initial_bundles,
            "revised_bundles": None,
            "feedback": feedback.to_json(),
            "feedback_text": feedback_text,
            "revised_feedback": None,
            "rules": [],
            "initial_f1": initial_f1,
            "revised_f1": None,
            "difficulty": 1.0 - initial_f1,
        }
        messages = messages + [{"role": "assistant", "content": first}]

        try:
            rules_answer = self._reflect(session, teacher, messages, feedback, feedback_text, content, truth)
        except TeacherError as exc:
            # The distiller records the session as failed; this keeps the first answer and its
            # difficulty reachable for it (the samplers want them).
            exc.with_partial(content)
            raise
        rules = parse_rules(rules_answer, s.max_rules)
        content["rules"] = rules
        if not rules:
            return Extraction.failed("no rule could be parsed from the teacher's answer", **content)
        text = "\n".join(f"{i}. {rule}" for i, rule in enumerate(rules, start=1))
        return Extraction("ok", content, text)

    def _reflect(self, session: Session, teacher: Teacher, messages: list[Message], feedback: SessionFeedback,
                 feedback_text: str, content: dict[str, Any], truth: list[tuple[int, ...]]) -> str:
        """Turns 2-4 (feedback, revision, rules request); fills ``content``; the rules answer."""
        s = self.settings
        n_items = len(session.item_ids)
        rules_request = RULES_REQUEST.format(answer=answer_dict(session), n=s.max_rules)
        if s.revise and not feedback.all_correct:
            messages.append({"role": "user", "content": feedback_text})
            revised = teacher.chat(list(messages), max_tokens=s.max_tokens_answer,
                                   schema=self.response_schema("answer", session))
            revised_parse = parse_bundles(revised, n_items)
            revised_bundles = None if revised_parse.failed else [list(b) for b in revised_parse.bundles]
            content["answers"]["revised"] = revised
            content["revised_bundles"] = revised_bundles
            content["revised_feedback"] = feedback_for_answer(revised, session).to_json()
            content["revised_f1"] = exact_f1(revised_bundles, truth)
            messages += [{"role": "assistant", "content": revised}, {"role": "user", "content": rules_request}]
        else:
            # No revision turn: the feedback and the rules request share one user turn.
            messages.append({"role": "user", "content": f"{feedback_text} {rules_request}".strip()})
        rules_answer = teacher.chat(list(messages), max_tokens=s.max_tokens_rules)
        content["answers"]["rules"] = rules_answer
        return rules_answer

    def aggregate(self, records: Sequence[KnowledgeRecord], domain: str) -> list[KnowledgeItem]:
        """The ``top_k`` rules stated by the most sessions, near-duplicates merged (deterministic).

        Each session counts once per merged rule. Normalized forms are clustered greedily, most
        stated first (then alphabetically), each joining the first cluster whose seed shares at
        least ``merge_jaccard`` of its content words; a cluster's text is its most frequent
        surface form (then the shortest, then alphabetical).
        """
        s = self.settings
        # normalized form -> sessions stating it, and its surface forms
        sessions_of: dict[str, set[str]] = {}
        surfaces: dict[str, Counter[str]] = {}
        ok_units: set[str] = set()
        for record in records:
            if not record.ok:
                continue
            unit = record.session_id or record.unit
            ok_units.add(unit)
            for rule in record.content.get("rules", []):
                key = normalize_rule(rule)
                if not key:
                    continue
                sessions_of.setdefault(key, set()).add(unit)
                surfaces.setdefault(key, Counter())[rule.strip()] += 1
        order = sorted(sessions_of, key=lambda k: (-len(sessions_of[k]), k))
        clusters: list[tuple[frozenset[str], list[str]]] = []  # (seed tokens, member keys)
        for key in order:
            tokens = rule_tokens(key)
            for seed, members in clusters:
                if _jaccard(tokens, seed) >= s.merge_jaccard:
                    members.append(key)
                    break
            else:
                clusters.append((tokens, [key]))
        ranked = []
        for _, members in clusters:
            units = set().union(*(sessions_of[k] for k in members))
            forms: Counter[str] = Counter()
            for k in members:
                forms.update(surfaces[k])
            text = min(forms, key=lambda f: (-forms[f], len(f), f))
            ranked.append((len(units), text, sorted(forms), sorted(units)))
        ranked.sort(key=lambda r: (-r[0], r[1]))
        n_sessions = len(ok_units)
        return [
            KnowledgeItem(kind=self.name, domain=domain, text=text, support=float(count),
                          data={"n_sessions": count, "share": count / n_sessions if n_sessions else 0.0,
                                "variants": variants[:10], "sessions": units},
                          scope="domain", heading="Rules")
            for count, text, variants, units in ranked[: s.top_k]
        ]

    def difficulty(self, record: KnowledgeRecord) -> float | None:
        """``content["difficulty"]``: 1 - exact F1 of the teacher's first answer (failed records
        keep it too); ``None`` when the record has no numeric value."""
        value = record.content.get("difficulty") if isinstance(record.content, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value)


@hookimpl
def register_knowledge_extractors(register: Callable[[type[KnowledgeExtractor]], None]) -> None:
    register(RulesExtractor)
