"""The distillation pipeline: extract knowledge from the training sessions, then sample a set.

``bundlellm distill -c configs/electronic/distill.yaml`` calls :func:`distill`:

1. resolve the configuration once (:func:`resolve_distill_settings`): extractors, their
   fingerprints, the teacher's and the sampling settings, checked before any teacher call;
2. read the *training* sessions only, with their bundles and intents, through RecBole's dataset;
3. extract each knowledge type through the store (:class:`~recbole_bundlellm.knowledge.extraction.ExtractionRun`;
   with ``teacher.mode: batch`` the teacher kinds together, through batches:
   :class:`~recbole_bundlellm.knowledge.batch.BatchExtraction`);
4. if ``sampling`` is set, select sessions with the sampler and write the knowledge set;
5. write and return a summary (records per type, failures, calls made vs served from the store,
   tokens, estimated cost, time).

It sits above ``knowledge/`` and ``sampling/`` (and uses both), so neither imports the other's
pipeline.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from recbole_bundlellm.config import BundleConfig
from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.data.training import load_training_sessions
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.fileio import atomic_write_text
from recbole_bundlellm.knowledge.extraction import ExtractionRun
from recbole_bundlellm.knowledge.extractor import KnowledgeExtractor, extractor_fingerprint
from recbole_bundlellm.knowledge.store import KnowledgeStore, StoreError, store_write_errors
from recbole_bundlellm.knowledge.summary import DistillPlan, DistillSummary, KindSummary
from recbole_bundlellm.extension.host import PluginHost
from recbole_bundlellm.sampling.sampler import Sampler
from recbole_bundlellm.sampling.settings import SamplingSettings
from recbole_bundlellm.settings import SettingsError, load_settings
from recbole_bundlellm.teacher.calls import canonical_json, now_iso
from recbole_bundlellm.teacher.errors import TeacherBatchError, TeacherUnavailable
from recbole_bundlellm.teacher.settings import TeacherSettings


class DistillError(BundleLLMError, RuntimeError):
    """A distillation that stopped; the message says what is kept and how to resume."""


class DistillInterrupted(KeyboardInterrupt):
    """A distillation stopped by Ctrl-C; the message says what is kept and how to resume.

    A KeyboardInterrupt, so whatever handles Ctrl-C (the command line: one line, exit 130) handles it.
    """


@dataclass(frozen=True)
class DistillSettings:
    """Everything a distillation needs, resolved and checked once from the configuration."""

    domain: str
    extractors: Mapping[str, KnowledgeExtractor]  # knowledge type -> extractor, in config order
    fingerprints: Mapping[str, str]  # knowledge type -> configuration fingerprint
    plugins: Mapping[str, str]  # knowledge type -> plugin providing its extractor
    teacher: TeacherSettings | None  # None when no extractor needs the teacher
    sampling: SamplingSettings | None
    sampler: Sampler | None
    store_dir: Path
    max_sessions: int | None

    @property
    def kinds(self) -> list[str]:
        return list(self.extractors)


def resolve_distill_settings(config: BundleConfig) -> DistillSettings:
    """Resolve ``knowledge_types``, each extractor's block, ``teacher:`` and ``sampling:`` at once.

    Every error (an unknown extractor or sampler, a bad setting) surfaces here, before any call.
    """
    host = config.host
    kinds = config["knowledge_types"] or []
    if isinstance(kinds, str):
        kinds = [kinds]
    if not kinds:
        raise SettingsError("knowledge_types is empty: name at least one extractor")
    extractors = {k: host.create("extractor", k, config) for k in kinds}
    raw_sampling = config["sampling"]
    sampling = None if raw_sampling is None else load_settings(SamplingSettings, raw_sampling, "sampling")
    sampler = host.create("sampler", sampling.sampler, config) if sampling is not None else None
    needs_teacher = any(e.needs_teacher for e in extractors.values())
    teacher = load_settings(TeacherSettings, config["teacher"], "teacher") if needs_teacher else None
    identity = teacher.identity() if teacher else None
    return DistillSettings(
        domain=str(config["dataset"]),
        extractors=MappingProxyType(extractors),
        fingerprints=MappingProxyType({k: extractor_fingerprint(e, identity) for k, e in extractors.items()}),
        plugins=MappingProxyType({k: host.components["extractor"][k].plugin for k in kinds}),
        teacher=teacher,
        sampling=sampling,
        sampler=sampler,
        store_dir=Path(config["knowledge_dir"]),
        max_sessions=config["distill_max_sessions"] or None,
    )


class Distillation:
    """One distillation run over one domain (see :func:`distill`)."""

    def __init__(self, config: BundleConfig, settings: DistillSettings, progress: bool | None = None) -> None:
        self.config = config
        self.host: PluginHost = config.host
        self.settings = settings
        self.progress = progress
        self.store = KnowledgeStore(settings.store_dir)

    def run(self, sessions: Sequence[Session]) -> DistillSummary:
        s = self.settings
        start, started_at = time.perf_counter(), now_iso()
        summaries = {kind: KindSummary() for kind in s.extractors}
        client = None
        with self.store.writer():
            if s.teacher is not None:
                from recbole_bundlellm.teacher.client import TeacherClient

                client = TeacherClient(s.teacher, self.store)
            extraction = ExtractionRun(
                self.store, s.domain, s.extractors, s.fingerprints, plugins=s.plugins, client=client,
                concurrency=s.teacher.concurrency if s.teacher else 1, strict=self.host.strict,
                on_record=lambda record: self.host.notify("knowledge_record_stored", record=record),
                progress=self.progress)
            pending = {k: extraction.pending(k, sessions) for k in s.extractors}
            self.host.notify("distill_started", plan=DistillPlan(
                s.domain, s.kinds, len(sessions), self.store.root, dict(s.fingerprints),
                {k: len(v) for k, v in pending.items()},
                s.teacher.public() if s.teacher else None,
                asdict(s.sampling) if s.sampling else None))
            batched = s.teacher is not None and s.teacher.mode == "batch"
            for kind, extractor in s.extractors.items():
                if not (batched and extractor.needs_teacher):
                    self._run_kind(extraction, kind, pending[kind], summaries, client)
            batch_seconds = 0.0
            if batched:
                t0 = time.perf_counter()
                self._run_batch(extraction, {k: pending[k] for k, e in s.extractors.items() if e.needs_teacher},
                                summaries, client)
                batch_seconds = time.perf_counter() - t0
            for kind in s.extractors:
                extraction.count(kind, sessions, summaries[kind])
            notes: list[str] = []
            kset_path, kset_counts = self._sample(sessions, summaries, notes) if s.sampling else (None, {})
        # Batch mode: the teacher kinds share the batches, so the phase's wall time is theirs.
        teacher_seconds = batch_seconds or sum(summaries[k].seconds for k, e in s.extractors.items() if e.needs_teacher)
        summary = DistillSummary(s.domain, str(self.store.root), len(sessions), summaries,
                                 self._teacher_summary(client, teacher_seconds),
                                 time.perf_counter() - start, kset_path, kset_counts, started_at, notes)
        with store_write_errors(self.store.root):
            atomic_write_text(self.store.root / "runs" / f"{started_at.replace(':', '')}-{s.domain}-{os.getpid()}.json",
                              canonical_json(summary.to_json()))
        self.host.notify("distill_finished", summary=summary)
        return summary

    def _run_kind(self, extraction: ExtractionRun, kind: str, todo: Sequence[Session],
                  summaries: Mapping[str, KindSummary], client: Any) -> None:
        """Extract one type; a stop (teacher gone, store not writable, Ctrl-C) says what is kept."""
        root = self.store.root
        try:
            extraction.run_kind(kind, todo, summaries[kind])
        except TeacherUnavailable as exc:
            raise DistillError(f"{exc}\nThe store {root} keeps every finished call and "
                               "record; run the same command again to resume.") from exc
        except StoreError as exc:
            raise DistillError(f"{exc}\nThe store {root} keeps every call and record written before "
                               "this error; once it can be written again, run the same command to resume.") from exc
        except KeyboardInterrupt as exc:
            records = sum(ks.new for ks in summaries.values())
            calls = client.stats.calls_made if client is not None else 0
            raise DistillInterrupted(f"interrupted: the store {root} keeps the {records} records and {calls} "
                                     "teacher calls this run finished; run the same command again to resume") from exc

    def _run_batch(self, extraction: ExtractionRun, todo: Mapping[str, Sequence[Session]],
                   summaries: Mapping[str, KindSummary], client: Any) -> None:
        """The teacher kinds through batches; a stop says what is kept and that the batch resumes."""
        from recbole_bundlellm.knowledge.batch import BatchExtraction

        root = self.store.root
        try:
            BatchExtraction(extraction, client, self.store, self.progress).extract(todo, summaries)
        except (TeacherUnavailable, TeacherBatchError) as exc:
            raise DistillError(f"{exc}\nThe store {root} keeps every answer fetched and every record; run the same "
                               "command again to resume (a batch still running is polled again, not paid twice).") \
                from exc
        except StoreError as exc:
            raise DistillError(f"{exc}\nThe store {root} keeps every call and record written before "
                               "this error; once it can be written again, run the same command to resume.") from exc
        except KeyboardInterrupt as exc:
            records = sum(ks.new for ks in summaries.values())
            raise DistillInterrupted(f"interrupted: the store {root} keeps the {records} records this run finished and "
                                     "the id of any batch still running on the endpoint; run the same command again "
                                     "to resume (that batch is polled again, not paid twice)") from exc

    def _sample(self, sessions: Sequence[Session], summaries: Mapping[str, KindSummary],
                notes: list[str]) -> tuple[str, dict[str, int]]:
        from recbole_bundlellm.sampling.compose import build_knowledge_set, write_knowledge_set

        s = self.settings
        sampling, sampler = s.sampling, s.sampler
        assert sampling is not None and sampler is not None
        domains = list(sampling.domains or [s.domain])
        by_domain = {d: (sessions if d == s.domain else self._other_domain_sessions(d)) for d in domains}
        # A difficulty sampler gets difficulty from the extractors that provide it (rules: the
        # teacher's first answer), else the Freq baseline's (computed inside build_knowledge_set).
        kset = build_knowledge_set(self.store, by_domain, s.extractors, s.fingerprints, sampler,
                                   sampling.ratio, sampling.seed)
        name = f"{'+'.join(domains)}-{'+'.join(s.extractors)}-{sampling.sampler}-r{sampling.ratio:g}-s{sampling.seed}.json"
        path = self.store.root / "sets" / name
        with store_write_errors(self.store.root):
            write_knowledge_set(kset, path)
        for domain, selection in kset.selection.items():
            for kind, counts in selection["kinds"].items():
                if not counts["available"]:
                    why = self._why_no_records(kind, summaries[kind]) if domain == s.domain else (
                        "of this configuration in the store (distil it with --dataset=" + domain + ")")
                    notes.append(f"{domain} has no ok {kind} records {why}; it adds nothing to the set")
        return str(path), kset.counts()

    def _why_no_records(self, kind: str, summary: KindSummary) -> str:
        """Why the domain just distilled has no ok ``kind`` record (for the run's notes)."""
        if summary.failed and not summary.errors:
            return (f"(all {summary.failed} failed: see `bundlellm knowledge show --dir {self.store.root} "
                    f"--status failed --kind {kind} --domain {self.settings.domain}`)")
        if summary.failed or summary.errors:
            return (f"({summary.failed} failed, {summary.errors} extractor errors not stored and retried on the "
                    "next run)")
        return "(no training session to distil)"

    def _other_domain_sessions(self, domain: str) -> list[Session]:
        sessions = load_training_sessions(self.config, domain)
        limit = self.settings.max_sessions
        return sessions[:limit] if limit else sessions

    def _teacher_summary(self, client: Any, seconds: float) -> dict[str, Any]:
        if client is None:
            return {}
        settings = self.settings.teacher
        assert settings is not None
        out = client.stats.to_json(settings)
        made = out["calls_made"] + client.stats.batch_calls  # answers fetched, by HTTP call or batch
        out.update(model=settings.model, concurrency=settings.concurrency, mode=settings.mode,
                   teacher_seconds=round(seconds, 3),
                   calls_per_second=round(made / seconds, 4) if seconds > 0 and made else 0.0)
        return out


def distill(config_files: Sequence[str | os.PathLike] = (), config_dict: dict[str, Any] | None = None, *,
            progress: bool | None = None, host: PluginHost | None = None) -> DistillSummary:
    """Run a distillation as configured; returns its summary (also written to ``<store>/runs/``).

    ``host``: the plugin host to use (default: one built from the configuration and environment).
    ``progress``: progress bars (default: on a terminal only).
    """
    # Distillation runs no model: its files are often the students' own, so any model's keys pass.
    config = BundleConfig("BundleLLM", None, list(config_files), dict(config_dict or {}), host=host,
                          check_model_keys=False)
    settings = resolve_distill_settings(config)
    sessions = load_training_sessions(config)
    if settings.max_sessions:
        sessions = sessions[:settings.max_sessions]
    return Distillation(config, settings, progress).run(sessions)
