"""The contract of a knowledge extractor plugin.

An extractor turns training sessions into knowledge in two steps:

1. :meth:`KnowledgeExtractor.extract_session` — once per training session, possibly asking the
   teacher. The distiller stores the result as a :class:`~recbole_bundlellm.knowledge.records.KnowledgeRecord`
   (``ok`` or ``failed`` with a reason) and never asks again for a stored session.
2. :meth:`KnowledgeExtractor.aggregate` — from the records of a *selection* of sessions (chosen
   by a sampler) to the :class:`~recbole_bundlellm.knowledge.records.KnowledgeItem` list a prompt or
   a fine-tuning set uses. Cheap and deterministic, and it never calls the teacher, so any
   sampler/ratio can be tried on stored records for free.

Optionally, :meth:`KnowledgeExtractor.difficulty` tells how hard a record's session was, for the
``difficulty`` sampler, and :attr:`KnowledgeExtractor.response_schemas` /
:meth:`KnowledgeExtractor.response_schema` declare the JSON Schemas of answers that are JSON
(asked with ``response_format``, OpenAI structured outputs, unless ``teacher.structured_outputs: off``).

Register a subclass through the ``register_knowledge_extractors`` hook.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Protocol

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.knowledge.records import KnowledgeItem, KnowledgeRecord, Status
from recbole_bundlellm.settings import Component
from recbole_bundlellm.teacher.calls import ResponseSchema, TeacherReply

Message = dict[str, str]


class Teacher(Protocol):
    """What an extractor sees of the teacher: ``chat`` (the answer text) and ``reply`` (the answer
    with its finish reason and token usage, a :class:`~recbole_bundlellm.teacher.calls.TeacherReply`).

    Calls go through the knowledge store (a repeated request is served from disk, with the
    finish reason and usage of the call as it was made). A call that
    the endpoint rejects for good raises :class:`~recbole_bundlellm.teacher.errors.TeacherRequestError`
    (the distiller stores the session as failed with that reason); an endpoint that stays
    unreachable raises :class:`~recbole_bundlellm.teacher.errors.TeacherUnavailable`, which stops
    the distillation with everything finished so far kept.

    ``schema`` (a :class:`~recbole_bundlellm.teacher.calls.ResponseSchema`, usually
    ``self.response_schema(turn, session)``) asks for an answer following it; the answer is text
    all the same (free text where the endpoint refuses ``response_format`` or the user turned
    structured outputs off), so parse it as you would without.
    """

    model: str

    def chat(self, messages: list[Message], *, max_tokens: int | None = None,
             temperature: float | None = None, schema: ResponseSchema | None = None) -> str: ...

    def reply(self, messages: list[Message], *, max_tokens: int | None = None,
              temperature: float | None = None, schema: ResponseSchema | None = None) -> TeacherReply: ...


@dataclass
class Extraction:
    """The outcome of one session: ``content`` (JSON), the prompt-ready ``text`` and a status."""

    status: Status
    content: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    reason: str | None = None

    @classmethod
    def failed(cls, reason: str, **content: Any) -> Extraction:
        return cls("failed", dict(content), "", reason)


class KnowledgeExtractor(Component, ABC):
    """Base class of knowledge extractors.

    Class attributes: ``name`` (the knowledge type, also the YAML key of its settings),
    ``description``, ``version`` (bump it when prompts or algorithm change: stored records of
    another version are not reused), ``Settings`` (a dataclass with defaults, filled by
    :func:`~recbole_bundlellm.settings.load_settings`), ``needs_teacher`` and, for answers that
    are JSON, ``response_schemas``.
    """

    version: ClassVar[str] = "1"
    needs_teacher: ClassVar[bool] = False
    #: The JSON Schemas of this extractor's JSON answers, by turn name (e.g. ``{"answer": {...}}``),
    #: in the form OpenAI's strict structured outputs accept. Empty: every answer is free text.
    #: Bump ``version`` when a schema changes (the schema is in the call key, not the fingerprint).
    response_schemas: ClassVar[Mapping[str, Mapping[str, Any]]] = MappingProxyType({})

    def response_schema(self, turn: str, session: Session) -> ResponseSchema | None:
        """The schema to ask ``turn`` of ``session`` with (``teacher.chat(..., schema=...)``), or None.

        The default: ``response_schemas[turn]``, named ``<name>_<turn>``. Override it for a
        schema that depends on the session (e.g. only its products as allowed values); an
        extractor that does so must list the turn in ``response_schemas`` too (a general form).
        """
        schema = self.response_schemas.get(turn)
        return None if schema is None else ResponseSchema(f"{self.name}_{turn}", schema)

    @abstractmethod
    def extract_session(self, session: Session, teacher: Teacher | None) -> Extraction:
        """Knowledge from one training session (with its ground-truth ``bundles`` and ``intents``).

        ``teacher`` is ``None`` when ``needs_teacher`` is False. Unusable teacher answers must
        come back as :meth:`Extraction.failed` with the raw answer in ``content``, never dropped.
        """

    @abstractmethod
    def aggregate(self, records: Sequence[KnowledgeRecord], domain: str) -> list[KnowledgeItem]:
        """The knowledge items of the selected sessions' ``ok`` records (no teacher calls)."""

    def difficulty(self, record: KnowledgeRecord) -> float | None:
        """How hard ``record``'s session is, from 0 (easy) to 1 (hard), or ``None`` when unknown.

        Optional: the default knows nothing. An extractor that measures it (the ``rules``
        extractor: ``1 - exact F1`` of the teacher's first answer) overrides this. It is asked
        for records of any status (a useless first answer is a hard session) and never calls
        the teacher; the caller ignores non-finite values and clamps the rest to [0, 1].
        """
        return None


def provides_difficulty(extractor: KnowledgeExtractor) -> bool:
    """Whether ``extractor`` overrides :meth:`KnowledgeExtractor.difficulty` (the others are not
    asked, so their records need not be read)."""
    return type(extractor).difficulty is not KnowledgeExtractor.difficulty


def declares_schemas(extractor: KnowledgeExtractor) -> bool:
    """Whether ``extractor`` asks any answer with a JSON schema (structured outputs apply to it)."""
    return extractor.needs_teacher and bool(extractor.response_schemas)


def extractor_fingerprint(extractor: KnowledgeExtractor, teacher_identity: dict[str, Any] | None) -> str:
    """What makes a stored record reusable: extractor name, version and settings, and for
    teacher-based extractors the teacher's model and sampling parameters (never its URL or key).

    Structured outputs (``structured_outputs`` of the identity) count only for an extractor that
    declares schemas, and only when on (``auto``/``on``): so ``off`` keeps the fingerprints of
    stores made before structured outputs existed, and free-text extractors never change. The
    domain is not part of it, so one configuration has one fingerprint across domains.
    """
    from recbole_bundlellm.teacher.calls import stable_hash
    from recbole_bundlellm.settings import settings_dict

    teacher = dict(teacher_identity) if extractor.needs_teacher and teacher_identity is not None else None
    structured = (teacher.pop("structured_outputs", "off") or "off") if teacher is not None else "off"
    hashed: dict[str, Any] = {
        "extractor": extractor.name,
        "version": extractor.version,
        "settings": settings_dict(extractor.settings),
        "teacher": teacher,
    }
    if structured != "off" and declares_schemas(extractor):
        hashed["structured_outputs"] = True  # auto and on: both ask with the schema
    return stable_hash(hashed, 16)
