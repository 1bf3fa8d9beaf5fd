"""Composing knowledge sets from stored records: select sessions, then aggregate per type.

One selection of sessions per domain is shared by every knowledge type of that domain, so a
set with several types (multi-format aggregation, :func:`aggregate_formats`) describes the same
sessions in each format, and a set of one type over several domains (multi-domain
accumulation, :func:`accumulate_domains`) keeps each item's domain. Nothing here calls the
teacher: any sampler, ratio or seed can be tried on the records already in the store.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recbole_bundlellm.data.sessions import Session, session_id_order
from recbole_bundlellm.fileio import atomic_write_text
from recbole_bundlellm.knowledge.extractor import (
    KnowledgeExtractor,
    provides_difficulty,
)
from recbole_bundlellm.knowledge.store import KnowledgeStore
from recbole_bundlellm.sampling.difficulty import session_difficulty
from recbole_bundlellm.sampling.knowledge_set import KnowledgeSet
from recbole_bundlellm.sampling.sampler import Sampler, SamplerError, SamplingContext, sample_size
from recbole_bundlellm.settings import settings_dict

#: Difficulty of one domain: ``(difficulty per session id, source)`` as returned by
#: :func:`~recbole_bundlellm.sampling.difficulty.session_difficulty`, or a bare mapping
#: (its source is then recorded as ``"given"``).
DomainDifficulty = tuple[Mapping[str, float], str] | Mapping[str, float]


def sampler_rng(sampler: Sampler, seed: int | str) -> random.Random:
    """The seeded generator a sampler gets. A *string* seed is hashed with SHA-512 by
    :class:`random.Random`, unlike ``hash()``, so it is the same in every process."""
    return random.Random(f"bundlellm-sampling:{seed}:{sampler.name}")


def select_sessions(sampler: Sampler, sessions: Sequence[Session], ratio: float, seed: int | str,
                    difficulty: Mapping[str, float] | None = None) -> list[str]:
    """The ids of ``round(ratio * len(sessions))`` sessions (at least one) chosen by ``sampler``.

    Raises ``ValueError`` for a ratio outside 0.1..0.7, and :class:`SamplerError` when the sampler
    does not return exactly that many distinct (string) ids of the given sessions.
    """
    if not sessions:
        sample_size(1, ratio)  # still reject a bad ratio
        return []
    size = sample_size(len(sessions), ratio)
    context = SamplingContext(sessions, sampler_rng(sampler, seed), dict(difficulty or {}))
    chosen = list(sampler.select(context, size))
    wrong = [c for c in chosen if not isinstance(c, str)]
    if wrong:  # an int 3 is not the session "3": every later lookup would miss it
        shown = ", ".join(f"{type(c).__name__} {c!r}" for c in wrong[:3]) + (", ..." if len(wrong) > 3 else "")
        raise SamplerError(f"sampler '{sampler.name}' returned session ids that are not strings ({shown}); "
                           "select must return the chosen sessions' session_id values, which are strings")
    known = {s.session_id for s in sessions}
    if len(chosen) != size or len(set(chosen)) != size or not set(chosen) <= known:
        raise SamplerError(f"sampler '{sampler.name}' returned {len(chosen)} ids ({len(set(chosen))} distinct, "
                           f"{len(set(chosen) - known)} unknown) where {size} distinct session ids were asked for")
    return chosen


def _split_difficulty(value: DomainDifficulty | None) -> tuple[dict[str, float] | None, str]:
    if value is None:
        return None, "none"
    if isinstance(value, tuple):
        mapping, source = value
        return dict(mapping), str(source)
    return dict(value), "given"


def _domain_difficulty(store: KnowledgeStore, domain: str, sessions: Sequence[Session],
                       extractors: Mapping[str, KnowledgeExtractor],
                       fingerprints: Mapping[str, str]) -> tuple[dict[str, float], str]:
    # Only the records of the configuration in use (any status): another fingerprint's teacher
    # may have found other sessions hard. Extractors without difficulty are not read at all.
    readers = {kind: e for kind, e in extractors.items() if provides_difficulty(e)}
    records = [r for kind in readers for r in store.records(kind, domain, fingerprint=fingerprints[kind])]
    return session_difficulty(sessions, records, readers)


def build_knowledge_set(store: KnowledgeStore, sessions_by_domain: Mapping[str, Sequence[Session]],
                        extractors: Mapping[str, KnowledgeExtractor], fingerprints: Mapping[str, str],
                        sampler: Sampler, ratio: float, seed: int | str,
                        difficulty_by_domain: Mapping[str, DomainDifficulty] | None = None) -> KnowledgeSet:
    """The knowledge set of ``extractors``' types (kind → extractor) over the given domains.

    Per domain, the sessions are selected once and the same selection serves every kind: the
    ``ok`` records of that kind, domain and ``fingerprints[kind]`` whose session is selected go
    (in selection order) to the extractor's ``aggregate``. A selected session without an ``ok``
    record of a kind contributes nothing to that kind; the counts are in ``selection``.

    A sampler with ``needs_difficulty`` (the ``difficulty`` sampler) whose domain has no entry
    in ``difficulty_by_domain`` gets difficulties measured here: from the stored records (of
    ``fingerprints[kind]``) of the extractors that provide difficulty (the ``rules`` one: the
    teacher's first answer), else from the Freq baseline; see
    :func:`~recbole_bundlellm.sampling.difficulty.session_difficulty`.
    """
    missing = [kind for kind in extractors if kind not in fingerprints]
    if missing:
        raise ValueError(f"no fingerprint given for knowledge type(s) {', '.join(missing)}")
    difficulty_by_domain = difficulty_by_domain or {}
    kset = KnowledgeSet(kinds=list(extractors), domains=list(sessions_by_domain))
    for domain, sessions in sessions_by_domain.items():
        difficulty, source = _split_difficulty(difficulty_by_domain.get(domain))
        if difficulty is None and sampler.needs_difficulty and sessions:
            difficulty, source = _domain_difficulty(store, domain, sessions, extractors, fingerprints)
        chosen = select_sessions(sampler, sessions, ratio, seed, difficulty)
        per_kind = _aggregate_domain(kset, store, domain, sessions, chosen, extractors, fingerprints)
        kset.selection[domain] = {
            "sampler": sampler.name,
            "sampler_settings": settings_dict(sampler.settings),
            "ratio": ratio,
            "seed": seed,
            "n_sessions": len(sessions),
            "session_ids": chosen,
            "difficulty_source": source,
            "kinds": per_kind,
        }
    return kset


def full_knowledge_set(store: KnowledgeStore, sessions_by_domain: Mapping[str, Sequence[Session]],
                       extractors: Mapping[str, KnowledgeExtractor],
                       fingerprints: Mapping[str, str]) -> KnowledgeSet:
    """The knowledge set of every ``ok`` record of the given sessions (no sampler): what a
    student uses with ``sampling: ~``. Sessions go to ``aggregate`` in session-id order; each
    domain's ``selection`` says ``"sampler": None`` and ``"all_records": True``."""
    missing = [kind for kind in extractors if kind not in fingerprints]
    if missing:
        raise ValueError(f"no fingerprint given for knowledge type(s) {', '.join(missing)}")
    kset = KnowledgeSet(kinds=list(extractors), domains=list(sessions_by_domain))
    for domain, sessions in sessions_by_domain.items():
        chosen = [s.session_id for s in sorted(sessions, key=lambda s: session_id_order(s.session_id))]
        per_kind = _aggregate_domain(kset, store, domain, sessions, chosen, extractors, fingerprints)
        kset.selection[domain] = {
            "sampler": None,
            "all_records": True,
            "n_sessions": len(sessions),
            "session_ids": chosen,
            "kinds": per_kind,
        }
    return kset


def _aggregate_domain(kset: KnowledgeSet, store: KnowledgeStore, domain: str, sessions: Sequence[Session],
                      chosen: Sequence[str], extractors: Mapping[str, KnowledgeExtractor],
                      fingerprints: Mapping[str, str]) -> dict[str, Any]:
    """Aggregate the ``ok`` records of the ``chosen`` sessions per kind into ``kset``; the counts per kind."""
    position = {sid: i for i, sid in enumerate(chosen)}
    domain_ids = {s.session_id for s in sessions}
    per_kind: dict[str, Any] = {}
    for kind, extractor in extractors.items():
        available = [r for r in store.records(kind, domain, fingerprint=fingerprints[kind], status="ok")
                     if r.session_id in domain_ids]
        # Selection order, then unit: never the store's write order, which depends on how
        # the teacher's threads happened to finish.
        used = sorted((r for r in available if r.session_id in position),
                      key=lambda r: (position[r.session_id], r.unit))
        items = extractor.aggregate(used, domain)
        kset.items.extend(items)
        per_kind[kind] = {
            "fingerprint": fingerprints[kind],
            "available": len(available),
            "used": len(used),
            "selected_without_record": len(set(chosen) - {r.session_id for r in used}),
            "items": len(items),
        }
    return per_kind


def accumulate_domains(kind: str, store: KnowledgeStore, sessions_by_domain: Mapping[str, Sequence[Session]], *,
                       extractor: KnowledgeExtractor, fingerprint: str, sampler: Sampler, ratio: float,
                       seed: int | str,
                       difficulty_by_domain: Mapping[str, DomainDifficulty] | None = None) -> KnowledgeSet:
    """Multi-domain accumulation: knowledge of ONE type gathered from several domains into one
    set (each item keeps its ``domain``; each domain has its own selection)."""
    return build_knowledge_set(store, sessions_by_domain, {kind: extractor}, {kind: fingerprint}, sampler, ratio,
                               seed, difficulty_by_domain)


def aggregate_formats(domain: str, store: KnowledgeStore, sessions: Sequence[Session], *,
                      extractors: Mapping[str, KnowledgeExtractor], fingerprints: Mapping[str, str],
                      sampler: Sampler, ratio: float, seed: int | str,
                      difficulty: DomainDifficulty | None = None) -> KnowledgeSet:
    """Multi-format aggregation: several knowledge types (kind → extractor) of ONE domain, all
    drawn from the same selection of sessions."""
    return build_knowledge_set(store, {domain: sessions}, extractors, fingerprints, sampler, ratio, seed,
                               {domain: difficulty} if difficulty is not None else None)


def write_knowledge_set(kset: KnowledgeSet, path: str | Path) -> Path:
    """Write ``kset`` as JSON (atomically: a temporary file, then a rename); returns the path.
    Read it back with :meth:`KnowledgeSet.load`."""
    path = Path(path)
    atomic_write_text(path, json.dumps(kset.to_json(), ensure_ascii=False, indent=1) + "\n")
    return path


__all__ = ["DomainDifficulty", "accumulate_domains", "aggregate_formats", "build_knowledge_set",
           "full_knowledge_set", "sampler_rng", "select_sessions", "write_knowledge_set"]
