"""Teacher calls as data: the call record, its token usage, its key, and the cache they live in.

These sit in the teacher package (the lowest layer) so that the client needs nothing from the
knowledge package; the knowledge store implements :class:`CallCache` and imports them from here.

The key of a request is a hash of its canonical JSON: changing :func:`canonical_json`,
:func:`stable_hash` or :func:`call_key` would make every stored call miss, so they must not change.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) used for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def stable_hash(obj: Any, length: int = 32) -> str:
    """SHA-256 of :func:`canonical_json` of ``obj``, hex, cut to ``length``."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()[:length]


def now_iso() -> str:
    """The current UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
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
    # The model the endpoint says answered (the response's ``model``); None in calls stored
    # before it was recorded. Never part of the key: the key is of the request only.
    response_model: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> CallRecord:
        """The call of a stored JSON object; ``TypeError`` when it is not one (a damaged line)."""
        data = dict(_json_object(data))
        data["usage"] = Usage(**_json_object(data.get("usage", {})))
        call = cls(**data)  # TypeError: a missing or unknown field
        check_field_types(call, _CALL_FIELDS)
        check_field_types(call.usage, {"prompt_tokens": int, "completion_tokens": int})
        return call


_CALL_FIELDS: dict[str, Any] = {
    "key": str, "model": str, "request": dict, "text": str, "finish_reason": (str, type(None)),
    "created_at": str, "latency_s": (int, float), "attempts": int, "response_model": (str, type(None)),
}


@dataclass(frozen=True)
class TeacherReply:
    """One teacher answer with what an extractor needs to judge it (``teacher.reply(...)``).

    ``finish_reason`` is the endpoint's (``"stop"``: finished; ``"length"``: cut off at
    ``max_tokens``; ``None`` when it gave none). ``usage`` is the tokens of the call as it was
    made, also when the reply is served from the store (``cached``: then it cost nothing now).
    ``key`` is the call's key in the store.
    """

    text: str
    finish_reason: str | None = "stop"
    usage: Usage = field(default_factory=Usage)
    cached: bool = False
    model: str | None = None
    key: str | None = None

    @property
    def truncated(self) -> bool:
        """True when the answer was cut off at ``max_tokens`` (``finish_reason == "length"``)."""
        return self.finish_reason == "length"

    @classmethod
    def of_call(cls, call: CallRecord, cached: bool) -> TeacherReply:
        """The reply of a stored or fresh :class:`CallRecord`."""
        usage = Usage(call.usage.prompt_tokens, call.usage.completion_tokens)
        return cls(call.text, call.finish_reason, usage, cached, call.response_model or call.model, call.key)


def _json_object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TypeError(f"a JSON {type(data).__name__}, not an object")
    return data


def check_field_types(obj: Any, types: dict[str, Any]) -> None:
    """Raise ``TypeError`` naming the first field of ``obj`` whose value is not of its type in ``types``."""
    for name, expected in types.items():
        value = getattr(obj, name)
        if not isinstance(value, expected):
            raise TypeError(f"field '{name}' is a {type(value).__name__}")


_SCHEMA_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class ResponseSchema:
    """A JSON Schema an answer must follow (OpenAI structured outputs), with its name.

    ``name``: letters, digits, ``_`` and ``-``, at most 64 (OpenAI's rule). ``schema``: a JSON
    Schema that OpenAI's strict mode accepts (every object lists all its properties in
    ``required`` and sets ``"additionalProperties": false``). The answer still arrives as text and
    is read by the extractor's own parser, so a free-text answer (an endpoint that refuses
    ``response_format``) is read the same way.
    """

    name: str
    schema: Mapping[str, Any]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _SCHEMA_NAME_RE.match(self.name):
            raise ValueError(f"a response schema's name must be 1-64 letters, digits, '_' or '-', got {self.name!r}")
        if not isinstance(self.schema, Mapping) or not self.schema:
            raise ValueError(f"response schema {self.name!r}: the schema must be a non-empty JSON Schema mapping")
        object.__setattr__(self, "schema", _plain_json(self.schema))  # read-only mappings, tuples -> JSON

    def response_format(self) -> dict[str, Any]:
        """``{"type": "json_schema", "json_schema": {"name", "schema", "strict": true}}`` (plain JSON;
        what OpenAI is sent and what the call key holds)."""
        return {"type": "json_schema",
                "json_schema": {"name": self.name, "schema": json.loads(canonical_json(self.schema)), "strict": True}}


def _plain_json(obj: Any) -> Any:
    """``obj`` with every mapping a dict and every tuple a list (a schema written with
    ``MappingProxyType`` must hash and serialize as the plain JSON it stands for)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain_json(v) for v in obj]
    return obj


def call_key(model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    """The cache key of a teacher request: a hash of (model, messages, parameters)."""
    return stable_hash({"model": model, "messages": messages, "params": params}, 40)


class CallCache(Protocol):
    """Where the client keeps finished calls (the knowledge store is one).

    ``put_call`` must be thread-safe and durable before it returns: the client stores a call
    before handing its answer out, so a killed run never pays for a finished call twice.
    """

    def get_call(self, key: str) -> CallRecord | None:
        """The stored call with this key, or None."""
        ...

    def put_call(self, call: CallRecord) -> bool:
        """Store a finished call; False (and nothing written) when its key is already stored."""
        ...
