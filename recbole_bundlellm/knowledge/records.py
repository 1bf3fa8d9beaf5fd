"""What the knowledge store holds besides teacher calls: knowledge records and items, as JSON-ready
dataclasses. The teacher calls themselves (:class:`~recbole_bundlellm.teacher.calls.CallRecord`)
are defined in the teacher package, below this one."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from recbole_bundlellm.settings import check_value
from recbole_bundlellm.teacher.calls import check_field_types, stable_hash

Status = Literal["ok", "failed"]
#: Where a knowledge item applies (set by the extractor that aggregates it; strategies pick items
#: by it, never by kind): ``"domain"``, every session of its domain (a rule: ranked by support);
#: ``"categories"``, a session whose categories include all of ``data["categories"]`` (a pattern);
#: ``"session"``, the one session ``session_id`` (a thought: shown with that session when it is an
#: example, or its training target's reasoning).
Scope = Literal["domain", "categories", "session"]
SCOPES: tuple[str, ...] = ("domain", "categories", "session")


@dataclass
class KnowledgeRecord:
    """One unit of extracted knowledge (usually one training session for one extractor).

    ``fingerprint`` identifies the extractor configuration that produced it (extractor name and
    version, its settings, the teacher's model and parameters), so changing any of these makes
    new records instead of mixing old and new ones. ``content`` is the extractor's own JSON;
    ``text`` the rendering a prompt can carry (empty for failed records). A failed record keeps
    the teacher's raw answers in ``content`` and says why in ``reason``.
    """

    kind: str
    domain: str
    unit: str
    fingerprint: str
    status: Status
    content: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    reason: str | None = None
    session_id: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def record_id(self) -> str:
        return record_id(self.kind, self.domain, self.unit, self.fingerprint)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["record_id"] = self.record_id
        return out

    @classmethod
    def from_json(cls, data: Any) -> KnowledgeRecord:
        """The record of a stored JSON object; ``TypeError`` or ``ValueError`` when it is not one
        (a damaged line)."""
        if not isinstance(data, dict):
            raise TypeError(f"a JSON {type(data).__name__}, not an object")
        record = cls(**{k: v for k, v in data.items() if k != "record_id"})  # TypeError: a missing or unknown field
        check_field_types(record, _RECORD_FIELDS)
        if record.status not in ("ok", "failed"):
            raise ValueError(f"status '{record.status}' is neither ok nor failed")
        return record


_RECORD_FIELDS: dict[str, Any] = {
    "kind": str, "domain": str, "unit": str, "fingerprint": str, "status": str, "content": dict, "text": str,
    "reason": (str, type(None)), "session_id": (str, type(None)), "provenance": dict,
}


def reason_class(reason: str | None) -> str:
    """A failure reason without its per-session details (the text before the first colon), for counting."""
    return (reason or "unknown").split(":")[0].strip()[:80]


def record_id(kind: str, domain: str, unit: str, fingerprint: str) -> str:
    return stable_hash([kind, domain, unit, fingerprint], 24)


@dataclass
class KnowledgeItem:
    """One piece of knowledge ready for a prompt or a training target.

    Produced by an extractor's ``aggregate`` from the records of the sampled sessions: a mined
    pattern, an aggregated rule, one session's thought. ``support`` counts the sessions (or
    transactions) behind it where that makes sense. ``scope``: where it applies (:data:`Scope`);
    ``heading``: the line a prompt shows above the items of its kind (``""``: the kind, capitalised).
    """

    kind: str
    domain: str
    text: str
    session_id: str | None = None
    support: float | None = None
    data: dict[str, Any] = field(default_factory=dict)
    scope: Scope = "domain"
    heading: str = ""

    def __post_init__(self) -> None:
        # Built in code (an extractor's aggregate) or from JSON: the guard, with the settings' checker.
        check_value("knowledge item scope", self.scope, {"type": "str", "choices": SCOPES})
        if self.scope == "session" and self.session_id is None:
            raise ValueError("a knowledge item of scope 'session' needs its session_id")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KnowledgeItem:
        return cls(**data)
