"""What the knowledge store holds: teacher calls and knowledge records, as JSON-ready dataclasses."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) used for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def stable_hash(obj: Any, length: int = 32) -> str:
    """SHA-256 of :func:`canonical_json` of ``obj``, hex, cut to ``length``."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()[:length]


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Usage:
    """Token counts of one or more teacher calls."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens

    def cost(self, price_input_per_1m: float, price_output_per_1m: float) -> float:
        """Estimated cost in the currency of the prices (per million tokens)."""
        return (self.prompt_tokens * price_input_per_1m + self.completion_tokens * price_output_per_1m) / 1e6


@dataclass
class CallRecord:
    """One completed teacher call, keyed by :func:`call_key` of its request.

    ``request`` holds the model, messages and sampling parameters exactly as sent (never the API
    key or the base URL); ``text`` the first choice's message content.
    """

    key: str
    model: str
    request: dict[str, Any]
    text: str
    finish_reason: str | None
    usage: Usage
    created_at: str
    latency_s: float
    attempts: int = 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallRecord:
        data = dict(data)
        data["usage"] = Usage(**data.get("usage", {}))
        return cls(**data)


def call_key(model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    """The store key of a teacher request: a hash of (model, messages, parameters)."""
    return stable_hash({"model": model, "messages": messages, "params": params}, 40)


Status = Literal["ok", "failed"]


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
    def from_json(cls, data: dict[str, Any]) -> KnowledgeRecord:
        data = {k: v for k, v in data.items() if k != "record_id"}
        return cls(**data)


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
    transactions) behind it where that makes sense.
    """

    kind: str
    domain: str
    text: str
    session_id: str | None = None
    support: float | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KnowledgeItem:
        return cls(**data)
