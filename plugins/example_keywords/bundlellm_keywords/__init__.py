"""Example plugin: the ``keywords`` knowledge extractor (title keywords that bundles combine)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.extension.hookspecs import hookimpl
from recbole_bundlellm.knowledge.extractor import Extraction, KnowledgeExtractor, Teacher
from recbole_bundlellm.knowledge.records import KnowledgeItem, KnowledgeRecord
from recbole_bundlellm.settings import ranged

_WORD = re.compile(r"[a-z][a-z0-9\-]{2,}")
_STOP = frozenset("""and the for with from this that pack set new black white blue red pink green grey gray
inch inches size sizes men women mens womens kids one two three compatible edition style version""".split())


@dataclass
class KeywordsSettings:
    """The YAML key ``keywords:``."""

    top_k: int = ranged(20, min=1)            # (int) How many keyword pairs aggregate keeps.
    min_sessions: int = ranged(2, min=1)      # (int) A pair must occur in at least this many sessions.
    max_words_per_item: int = ranged(6, min=1)  # (int) Content words taken from each title.


class KeywordsExtractor(KnowledgeExtractor):
    """Keyword pairs that ground-truth bundles combine across two different products."""

    name = "keywords"
    description = "title keyword pairs that bundles combine (example third-party plugin)"
    version = "1"
    Settings = KeywordsSettings
    needs_teacher = False

    def _words(self, title: str) -> list[str]:
        words = [w for w in _WORD.findall(title.lower()) if w not in _STOP]
        return list(dict.fromkeys(words))[: self.settings.max_words_per_item]

    def extract_session(self, session: Session, teacher: Teacher | None) -> Extraction:
        position = {item: i for i, item in enumerate(session.item_ids)}
        pairs: set[tuple[str, str]] = set()
        for bundle in session.bundles:
            words = [self._words(session.titles[position[item]]) for item in bundle if item in position]
            for a, b in combinations(words, 2):  # words of two different products
                pairs.update(tuple(sorted((x, y))) for x in a for y in b if x != y)
        if not pairs:
            return Extraction.failed("no keyword pair in the session's bundles")
        return Extraction("ok", {"pairs": sorted(pairs)}, f"{len(pairs)} keyword pairs")

    def aggregate(self, records: Sequence[KnowledgeRecord], domain: str) -> list[KnowledgeItem]:
        counts: Counter[tuple[str, str]] = Counter()
        for rec in records:
            if rec.ok:
                counts.update(tuple(p) for p in rec.content.get("pairs", []))
        ranked = sorted(((n, p) for p, n in counts.items() if n >= self.settings.min_sessions),
                        key=lambda np: (-np[0], np[1]))[: self.settings.top_k]
        return [KnowledgeItem(self.name, domain,
                              f"Bundles often combine a product mentioning '{a}' with one mentioning '{b}' "
                              f"({n} sessions).", support=float(n), data={"pair": [a, b]})
                for n, (a, b) in ranked]


@hookimpl
def register_knowledge_extractors(register: Callable[[type[KnowledgeExtractor]], None]) -> None:
    register(KeywordsExtractor)
