"""A knowledge set: the knowledge items a student uses, with how they were chosen."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recbole_bundlellm.knowledge.records import KnowledgeItem


@dataclass
class KnowledgeSet:
    """Items of one or more knowledge types from one or more domains.

    ``selection`` records, per domain, the sampler, ratio, seed and the chosen session ids, so a
    set can be rebuilt from the store and audited.
    """

    items: list[KnowledgeItem] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    selection: dict[str, Any] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[KnowledgeItem]:
        return [item for item in self.items if item.kind == kind]

    def of_domain(self, domain: str) -> list[KnowledgeItem]:
        return [item for item in self.items if item.domain == domain]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in self.items:
            out[item.kind] = out.get(item.kind, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"kinds": self.kinds, "domains": self.domains, "selection": self.selection,
                "counts": self.counts(), "items": [item.to_json() for item in self.items]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KnowledgeSet:
        return cls([KnowledgeItem.from_json(i) for i in data.get("items", [])], list(data.get("kinds", [])),
                   list(data.get("domains", [])), dict(data.get("selection", {})))

    @classmethod
    def load(cls, path: str | Path) -> KnowledgeSet:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
