"""The knowledge a student run uses: a knowledge set rebuilt from the distillation's store.

A student config names the kinds it uses (``knowledge_use: [patterns, rules]``; ``[]``: raw
data, no store needed) and reads the distillation's own keys: ``knowledge_dir`` (the store),
each extractor's settings block, ``teacher:`` (part of the fingerprints of teacher-based kinds),
``distill_max_sessions`` and ``sampling:``. The same keys give the same set the distillation
wrote, rebuilt from the stored records without calling the teacher. ``sampling: ~`` takes every
``ok`` record of the run's domain (no sampler).

The configuration is read by duck typing (item access and ``config.host``, the plugin host), so
this layer does not import :mod:`recbole_bundlellm.config`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.knowledge.extractor import KnowledgeExtractor, extractor_fingerprint
from recbole_bundlellm.knowledge.store import KnowledgeStore, is_store_dir
from recbole_bundlellm.sampling.knowledge_set import KnowledgeSet
from recbole_bundlellm.sampling.settings import SamplingSettings
from recbole_bundlellm.settings import SettingsError, load_settings
from recbole_bundlellm.teacher.settings import TeacherSettings

#: The student's key naming the knowledge kinds it uses.
USE_KEY = "knowledge_use"


class KnowledgeSourceError(BundleLLMError, ValueError):
    """The knowledge a student config asks for cannot be had from the store; the message says why
    and what to run or change."""


class KnowledgeStoreMissing(KnowledgeSourceError, FileNotFoundError):
    """``knowledge_dir`` is not a knowledge store (never distilled, or a wrong path)."""


class KnowledgeNotDistilled(KnowledgeSourceError):
    """A kind the student uses has no ``ok`` record of this configuration for a domain."""


class AmbiguousTeacher(KnowledgeSourceError):
    """Several teacher configurations distilled a kind and the config has no ``teacher:`` block to choose."""


class KnowledgeDomainMismatch(KnowledgeSourceError):
    """A one-domain knowledge set of another domain than the run's."""


def _get(config: Any, key: str) -> Any:
    if isinstance(config, Mapping):
        return config.get(key)
    try:  # RecBole's Config answers None for a key it does not have
        return config[key]
    except KeyError:
        return None


def knowledge_use(config: Any) -> list[str]:
    """The kinds the student uses (``knowledge_use``), checked: a list of names, no repeats."""
    value = _get(config, USE_KEY) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise SettingsError(f"{USE_KEY} must be a list of knowledge types (e.g. [patterns, rules]), got {value!r}")
    repeated = sorted({v for v in value if list(value).count(v) > 1})
    if repeated:
        raise SettingsError(f"{USE_KEY} names {', '.join(repeated)} more than once")
    return list(value)


def _fingerprints(store: KnowledgeStore, extractors: Mapping[str, KnowledgeExtractor], domains: Sequence[str],
                  teacher: Any) -> tuple[dict[str, str], dict[str, str]]:
    """Each kind's fingerprint, and where it came from (``config`` or ``store``).

    Without a ``teacher:`` block a teacher-based kind takes the one fingerprint of its ``ok``
    records in these domains; several are ambiguous (another teacher or other settings).
    """
    identity = load_settings(TeacherSettings, teacher, "teacher").identity() if teacher is not None else None
    fingerprints: dict[str, str] = {}
    sources: dict[str, str] = {}
    for kind, extractor in extractors.items():
        if identity is not None or not extractor.needs_teacher:
            fingerprints[kind], sources[kind] = extractor_fingerprint(extractor, identity), "config"
            continue
        found: dict[str, set[str]] = {}
        for domain in domains:
            for r in store.records(kind, domain, status="ok"):
                found.setdefault(r.fingerprint, set()).add(str(r.provenance.get("teacher_model", "?")))
        if len(found) > 1:
            listed = "; ".join(f"{fp} (teacher {', '.join(sorted(models))})" for fp, models in sorted(found.items()))
            raise AmbiguousTeacher(
                f"the knowledge store {store.root} holds '{kind}' records of {len(found)} teacher configurations "
                f"for {', '.join(domains)}: {listed}. Add the distillation's `teacher:` block to this config "
                "(the same model, temperature, seed and max_tokens) to choose one.")
        if found:
            fingerprints[kind], sources[kind] = next(iter(found)), "store"
    return fingerprints, sources


def _check_distilled(store: KnowledgeStore, kinds: Sequence[str], domains: Sequence[str],
                     fingerprints: Mapping[str, str]) -> None:
    missing = []
    for kind in kinds:
        for domain in domains:
            fp = fingerprints.get(kind)
            if fp is not None and store.records(kind, domain, fingerprint=fp, status="ok"):
                continue
            others = {r.fingerprint for r in store.records(kind, domain, status="ok")} - {fp}
            why = (f" (it has {kind} records of other extractor or teacher settings: {', '.join(sorted(others))}; "
                   f"use the distillation's `{kind}:` and `teacher:` blocks)") if others else ""
            missing.append(f"{kind} for {domain}{why}")
    if missing:
        raise KnowledgeNotDistilled(
            f"the knowledge store {store.root} has no ok records of {'; '.join(missing)}. Distil them first "
            f"(`bundlellm distill -c <distill config> --dataset=<domain>` with these knowledge_types), "
            f"or remove them from {USE_KEY}.")


def load_student_knowledge(config: Any, train_sessions: Sequence[Session] | None = None, *,
                           load_sessions: Callable[[Any, str], list[Session]] | None = None) -> KnowledgeSet | None:
    """The knowledge set of a student run, or ``None`` when ``knowledge_use`` is empty (raw data).

    ``train_sessions``: the run's training sessions (else read with ``load_sessions``);
    ``load_sessions(config, domain)``: the training sessions of a domain (default:
    :func:`~recbole_bundlellm.data.training.load_training_sessions`), for the other domains of
    ``sampling.domains``. Every selection and each kind's fingerprint (and whether it came from
    the config or, without a ``teacher:`` block, from the store) are in the set's ``selection``.

    Raises :class:`KnowledgeStoreMissing`, :class:`KnowledgeNotDistilled`,
    :class:`AmbiguousTeacher`, :class:`KnowledgeDomainMismatch` or :class:`SettingsError`.
    """
    kinds = knowledge_use(config)
    if not kinds:
        return None
    domain = str(_get(config, "dataset"))
    raw_sampling = _get(config, "sampling")
    sampling = load_settings(SamplingSettings, raw_sampling, "sampling") if raw_sampling is not None else None
    domains = list(dict.fromkeys(sampling.domains or [domain])) if sampling is not None else [domain]
    if len(domains) == 1 and domains[0] != domain:
        raise KnowledgeDomainMismatch(
            f"sampling.domains is [{domains[0]}] but this run is on {domain}: a one-domain knowledge set must "
            f"be the run's own. Add {domain} to sampling.domains (multi-domain accumulation), or drop "
            "sampling.domains.")
    root = Path(_get(config, "knowledge_dir") or "knowledge")
    if not is_store_dir(root):
        raise KnowledgeStoreMissing(
            f"no knowledge store in {root} ({USE_KEY}: {kinds}): run `bundlellm distill -c <distill config>` "
            "first, and set knowledge_dir to the folder it wrote; or set knowledge_use: [] for the raw data.")
    host = config.host
    extractors = {kind: host.create("extractor", kind, config) for kind in kinds}
    sampler = host.create("sampler", sampling.sampler, config) if sampling is not None else None
    store = KnowledgeStore(root)
    fingerprints, sources = _fingerprints(store, extractors, domains, _get(config, "teacher"))
    _check_distilled(store, kinds, domains, fingerprints)

    if load_sessions is None:
        from recbole_bundlellm.data.training import load_training_sessions as load_sessions
    limit = _get(config, "distill_max_sessions") or None  # the distillation sampled within these
    by_domain: dict[str, Sequence[Session]] = {}
    for d in domains:
        sessions = train_sessions if d == domain and train_sessions is not None else load_sessions(config, d)
        by_domain[d] = list(sessions)[:limit] if limit else list(sessions)

    from recbole_bundlellm.sampling.compose import build_knowledge_set, full_knowledge_set

    if sampling is None or sampler is None:
        kset = full_knowledge_set(store, by_domain, extractors, fingerprints)
    else:
        kset = build_knowledge_set(store, by_domain, extractors, fingerprints, sampler, sampling.ratio, sampling.seed)
    for selection in kset.selection.values():
        for kind, counts in selection["kinds"].items():
            counts["fingerprint_source"] = sources[kind]
    return kset


__all__ = ["USE_KEY", "AmbiguousTeacher", "KnowledgeDomainMismatch", "KnowledgeNotDistilled",
           "KnowledgeSourceError", "KnowledgeStoreMissing", "knowledge_use", "load_student_knowledge"]
