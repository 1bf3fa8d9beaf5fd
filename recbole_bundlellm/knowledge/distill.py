"""The distiller: extractors over the training sessions, through the store, then sampling.

``bundlellm distill -c configs/electronic/distill.yaml`` calls :func:`distill`:

1. read the config (RecBole's Config with our overlay) and the *training* sessions only,
   with their bundles and intents, through RecBole's own dataset;
2. for each knowledge type, run its extractor on every training session that has no stored
   record for the current configuration (its fingerprint), teacher calls running concurrently;
   each finished session is written to the store at once, so a killed run resumes where it
   stopped and no completed teacher call is ever repeated (calls are cached in the store too);
3. if ``sampling`` is set, choose sessions with the sampler and write the knowledge set;
4. write and return a summary (records per type, failures, calls made vs served from the
   store, tokens, estimated cost, time).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.knowledge.extractor import Extraction, KnowledgeExtractor, extractor_fingerprint
from recbole_bundlellm.knowledge.records import KnowledgeRecord, canonical_json, now_iso, reason_class, record_id
from recbole_bundlellm.fileio import atomic_write_text
from recbole_bundlellm.knowledge.store import KnowledgeStore
from recbole_bundlellm.plugins import PluginHost, get_host
from recbole_bundlellm.settings import SettingsError, load_settings

log = logging.getLogger(__name__)


class DistillError(RuntimeError):
    """A distillation that stopped; the message says what is kept and how to resume."""


@dataclass
class SamplingSettings:
    """The YAML key ``sampling:``."""

    sampler: str = "random"        # (str) A registered sampler: random, length, diversity, difficulty.
    ratio: float = 0.3             # (float) Share of the training sessions kept, 0.1 to 0.7.
    seed: int = 2024               # (int) Seed of the selection.
    domains: list[str] | None = None  # (list) Domains to accumulate (multi-domain); ~ for this dataset only.

    def validate(self) -> None:
        from recbole_bundlellm.sampling.sampler import MAX_RATIO, MIN_RATIO

        if not MIN_RATIO <= self.ratio <= MAX_RATIO:
            raise ValueError(f"ratio must be between {MIN_RATIO} and {MAX_RATIO}, got {self.ratio}")


@dataclass
class DistillPlan:
    """What a distillation is about to do (given to the ``distill_started`` hook)."""

    domain: str
    kinds: list[str]
    sessions: int
    store_dir: Path
    fingerprints: dict[str, str]
    pending: dict[str, int]
    teacher: dict[str, Any] | None
    sampling: dict[str, Any] | None


@dataclass
class KindSummary:
    """One knowledge type's outcome over the planned sessions."""

    ok: int = 0
    failed: int = 0
    new: int = 0
    errors: int = 0  # extractor crashes (not stored; retried on the next run)
    failure_reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def records(self) -> int:
        return self.ok + self.failed

    @property
    def failure_rate(self) -> float:
        return self.failed / self.records if self.records else 0.0


@dataclass
class DistillSummary:
    """The summary of one distillation run (also written to ``<store>/runs/``)."""

    domain: str
    store_dir: str
    sessions: int
    kinds: dict[str, KindSummary]
    teacher: dict[str, Any]
    wall_seconds: float
    knowledge_set: str | None = None
    knowledge_set_counts: dict[str, int] = field(default_factory=dict)
    started_at: str = ""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for kind, ks in self.kinds.items():
            out["kinds"][kind].update(records=ks.records, failure_rate=round(ks.failure_rate, 4))
        return out

    def format(self) -> str:
        """A short human-readable report."""
        lines = [f"distilled {self.domain}: {self.sessions} training sessions, store {self.store_dir}",
                 f"{'type':12s} {'records':>8s} {'ok':>6s} {'failed':>7s} {'fail %':>7s} {'new':>6s} {'seconds':>8s}"]
        for kind, ks in self.kinds.items():
            lines.append(f"{kind:12s} {ks.records:8d} {ks.ok:6d} {ks.failed:7d} {100 * ks.failure_rate:6.1f}% "
                         f"{ks.new:6d} {ks.seconds:8.1f}")
            for reason, count in sorted(ks.failure_reasons.items(), key=lambda kv: -kv[1])[:3]:
                lines.append(f"{'':12s}   failed {count:4d}x: {reason}")
            if ks.errors:
                lines.append(f"{'':12s}   extractor errors (not stored, retried next run): {ks.errors}")
        t = self.teacher
        if t:
            lines.append(
                f"teacher: {t.get('calls_made', 0)} calls made, {t.get('calls_cached', 0)} served from the store, "
                f"{t.get('retries', 0)} retries, tokens {t.get('usage', {}).get('prompt_tokens', 0)} in / "
                f"{t.get('usage', {}).get('completion_tokens', 0)} out, est. cost {t.get('cost', 0.0):.4f}, "
                f"{t.get('calls_per_second', 0.0):.2f} calls/s at concurrency {t.get('concurrency', '-')}")
        if self.knowledge_set:
            counts = ", ".join(f"{k} {v}" for k, v in self.knowledge_set_counts.items())
            lines.append(f"knowledge set: {self.knowledge_set} ({counts})")
        lines.extend(f"note: {note}" for note in self.notes)
        lines.append(f"wall time {self.wall_seconds:.1f} s")
        return "\n".join(lines)


def load_training_sessions(config: Any, dataset: str | None = None) -> list[Session]:
    """The training sessions of ``dataset`` (default: the config's), with bundles and intents,
    read through RecBole's own dataset."""
    import recbole_bundlellm  # noqa: F401  (compat patches before recbole)
    from recbole.data import create_dataset

    from recbole_bundlellm.data.sessions import read_intents, sessions_from_dataset
    from recbole_bundlellm.runner import check_prepared

    if dataset is not None and dataset != config["dataset"]:
        from recbole_bundlellm.config import BundleConfig

        config = BundleConfig(config.spec.name, dataset, config._user_files,
                              {k: v for k, v in config.variable_config_dict.items() if k != "dataset"})
    check_prepared(config)
    train = create_dataset(config).build()[0]
    folder = Path(config["data_path"])
    return sessions_from_dataset(train, intents=read_intents(folder / f"{config['dataset']}.bundle"))


def _teacher_settings(config: Any) -> Any:
    from recbole_bundlellm.teacher.settings import TeacherSettings

    return load_settings(TeacherSettings, config["teacher"], "teacher")


def _sampling_settings(config: Any) -> SamplingSettings | None:
    raw = config["sampling"]
    return None if raw is None else load_settings(SamplingSettings, raw, "sampling")


class _Distiller:
    """One distillation run over one domain (see :func:`distill`)."""

    def __init__(self, config: Any, host: PluginHost, progress: bool) -> None:
        self.config = config
        self.host = host
        self.progress = progress
        self.domain = str(config["dataset"])
        kinds = config["knowledge_types"] or []
        if isinstance(kinds, str):
            kinds = [kinds]
        if not kinds:
            raise SettingsError("knowledge_types is empty: name at least one extractor")
        self.extractors: dict[str, KnowledgeExtractor] = {k: host.create("extractor", k, config) for k in kinds}
        self.sampling = _sampling_settings(config)
        if self.sampling is not None:
            host.get("sampler", self.sampling.sampler)  # fail before any teacher call
        self.needs_teacher = any(e.needs_teacher for e in self.extractors.values())
        self.teacher_settings = _teacher_settings(config) if self.needs_teacher else None
        identity = self.teacher_settings.identity() if self.teacher_settings else None
        self.fingerprints = {k: extractor_fingerprint(e, identity) for k, e in self.extractors.items()}
        self.store = KnowledgeStore(config["knowledge_dir"])

    def run(self, sessions: Sequence[Session]) -> DistillSummary:
        start, started_at = time.perf_counter(), now_iso()
        summaries = {kind: KindSummary() for kind in self.extractors}
        client = None
        with self.store.writer():
            if self.needs_teacher:
                from recbole_bundlellm.teacher.client import TeacherClient

                client = TeacherClient(self.teacher_settings, self.store)
            pending = {k: self._pending(k, sessions) for k in self.extractors}
            self.host.notify("distill_started", plan=DistillPlan(
                self.domain, list(self.extractors), len(sessions), self.store.root, dict(self.fingerprints),
                {k: len(v) for k, v in pending.items()},
                self.teacher_settings.public() if self.teacher_settings else None,
                asdict(self.sampling) if self.sampling else None))
            for kind, extractor in self.extractors.items():
                t0 = time.perf_counter()
                try:
                    self._extract(kind, extractor, pending[kind], client, summaries[kind])
                finally:
                    summaries[kind].seconds = time.perf_counter() - t0
            for kind in self.extractors:
                self._count(kind, sessions, summaries[kind])
            notes: list[str] = []
            kset_path, kset_counts = self._sample(sessions, notes) if self.sampling else (None, {})
        teacher_seconds = sum(summaries[k].seconds for k, e in self.extractors.items() if e.needs_teacher)
        teacher = self._teacher_summary(client, teacher_seconds)
        summary = DistillSummary(self.domain, str(self.store.root), len(sessions), summaries, teacher,
                                 time.perf_counter() - start, kset_path, kset_counts, started_at, notes)
        runs = self.store.root / "runs"
        atomic_write_text(runs / f"{started_at.replace(':', '')}-{self.domain}-{os.getpid()}.json",
                          canonical_json(summary.to_json()))
        self.host.notify("distill_finished", summary=summary)
        return summary

    def _pending(self, kind: str, sessions: Sequence[Session]) -> list[Session]:
        fp = self.fingerprints[kind]
        return [s for s in sessions if self.store.get_record(record_id(kind, self.domain, s.session_id, fp)) is None]

    def _extract(self, kind: str, extractor: KnowledgeExtractor, todo: list[Session], client: Any,
                 summary: KindSummary) -> None:
        if not todo:
            return
        bar = _progress(len(todo), kind, self.progress)
        try:
            if not extractor.needs_teacher:
                for session in todo:
                    self._finish(kind, extractor, session, self._one(extractor, session, None), summary)
                    bar.update(1)
                return
            workers = self.teacher_settings.concurrency
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"distill-{kind}") as pool:
                queue = iter(todo)
                running: dict[Future, Session] = {}

                def submit_next() -> None:
                    session = next(queue, None)
                    if session is not None:
                        unit = client.for_unit()
                        running[pool.submit(self._one, extractor, session, unit)] = session

                # Feed the pool lazily: on a stop, at most `workers` sessions are in flight.
                for _ in range(workers):
                    submit_next()
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    failure: BaseException | None = None
                    for future in done:
                        session = running.pop(future)
                        try:
                            result = future.result()
                        except BaseException as exc:  # noqa: BLE001 - stop below, after draining
                            failure = failure or exc
                            continue
                        self._finish(kind, extractor, session, result, summary)
                        bar.update(1)
                    if failure is not None:
                        self._drain(running, kind, extractor, summary, bar)
                        raise self._stopped(failure)
                    for _ in done:
                        submit_next()
        finally:
            bar.close()

    def _drain(self, running: dict[Future, Session], kind: str, extractor: KnowledgeExtractor,
               summary: KindSummary, bar: Any) -> None:
        """Keep what the sessions already in flight finish (their calls are paid for)."""
        for future, session in list(running.items()):
            try:
                result = future.result()
            except BaseException:  # noqa: BLE001
                continue
            self._finish(kind, extractor, session, result, summary)
            bar.update(1)

    def _stopped(self, exc: BaseException) -> BaseException:
        from recbole_bundlellm.teacher.errors import TeacherUnavailable

        if isinstance(exc, TeacherUnavailable):
            return DistillError(f"{exc}\nThe store {self.store.root} keeps every finished call and record; "
                                "run the same command again to resume.")
        return exc

    def _one(self, extractor: KnowledgeExtractor, session: Session, unit: Any) -> tuple[Extraction | None, Any, str | None]:
        """Run one session; a teacher rejection becomes a failed record, an extractor crash an error."""
        from recbole_bundlellm.teacher.errors import TeacherRequestError, TeacherUnavailable

        try:
            return extractor.extract_session(session, unit), unit, None
        except TeacherRequestError as exc:
            # Keep what the extractor had before the rejection (e.g. the first answer's difficulty).
            partial = dict(getattr(exc, "partial_content", None) or {})
            return Extraction.failed(f"teacher rejected the request: {exc}", **partial), unit, None
        except TeacherUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - a third-party extractor's bug must not kill the run
            if self.host.strict:
                raise
            message = f"{type(exc).__name__}: {exc}"
            log.warning("extractor %s failed on session %s: %s", extractor.name, session.session_id, message)
            return None, unit, message

    def _finish(self, kind: str, extractor: KnowledgeExtractor, session: Session,
                result: tuple[Extraction | None, Any, str | None], summary: KindSummary) -> None:
        extraction, unit, error = result
        if extraction is None:
            summary.errors += 1
            return
        provenance: dict[str, Any] = {"extractor": extractor.name, "version": extractor.version,
                                      "plugin": self._plugin_of(kind), "created_at": now_iso()}
        if unit is not None:
            provenance.update(teacher_model=unit.model, calls=list(unit.call_keys),
                              calls_made=unit.calls_made, calls_cached=unit.calls_cached,
                              usage={"prompt_tokens": unit.usage.prompt_tokens,
                                     "completion_tokens": unit.usage.completion_tokens})
        record = KnowledgeRecord(kind, self.domain, session.session_id, self.fingerprints[kind], extraction.status,
                                 extraction.content, extraction.text if extraction.status == "ok" else "",
                                 extraction.reason, session.session_id, provenance)
        if self.store.put_record(record):
            summary.new += 1
            self.host.notify("knowledge_record_stored", record=record)

    def _plugin_of(self, kind: str) -> str:
        return self.host.components["extractor"][kind].plugin

    def _count(self, kind: str, sessions: Sequence[Session], summary: KindSummary) -> None:
        wanted = {s.session_id for s in sessions}
        reasons: Counter[str] = Counter()
        for rec in self.store.records(kind, self.domain, fingerprint=self.fingerprints[kind]):
            if rec.unit not in wanted:
                continue
            if rec.ok:
                summary.ok += 1
            else:
                summary.failed += 1
                reasons[reason_class(rec.reason)] += 1
        summary.failure_reasons = dict(reasons)

    def _sample(self, sessions: Sequence[Session], notes: list[str]) -> tuple[str, dict[str, int]]:
        from recbole_bundlellm.sampling.compose import build_knowledge_set, write_knowledge_set

        s = self.sampling
        domains = list(s.domains or [self.domain])
        by_domain = {d: (sessions if d == self.domain else self._other_domain_sessions(d)) for d in domains}
        sampler = self.host.create("sampler", s.sampler, self.config)
        # A difficulty sampler gets the teacher's difficulty from this run's rules records where
        # there are any, else the Freq baseline's (computed inside build_knowledge_set).
        kset = build_knowledge_set(self.store, by_domain, self.extractors, self.fingerprints, sampler,
                                   s.ratio, s.seed)
        name = f"{'+'.join(domains)}-{'+'.join(self.extractors)}-{s.sampler}-r{s.ratio:g}-s{s.seed}.json"
        path = self.store.root / "sets" / name
        write_knowledge_set(kset, path)
        for domain, selection in kset.selection.items():
            for kind, counts in selection["kinds"].items():
                if not counts["available"]:
                    notes.append(f"{domain} has no ok {kind} records of this configuration in the store "
                                 f"(distil it with --dataset={domain}); it adds nothing to the set")
        return str(path), kset.counts()

    def _other_domain_sessions(self, domain: str) -> list[Session]:
        sessions = load_training_sessions(self.config, domain)
        limit = self.config["distill_max_sessions"]
        return sessions[:limit] if limit else sessions

    def _teacher_summary(self, client: Any, seconds: float) -> dict[str, Any]:
        if client is None:
            return {}
        settings = self.teacher_settings
        out = client.stats.to_json(settings)
        made = out["calls_made"]
        out.update(model=settings.model, concurrency=settings.concurrency,
                   teacher_seconds=round(seconds, 3),
                   calls_per_second=round(made / seconds, 4) if seconds > 0 and made else 0.0)
        return out


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="session", disable=not enabled, leave=True)


def distill(config_files: Sequence[str | os.PathLike] = (), config_dict: dict[str, Any] | None = None, *,
            progress: bool = False) -> DistillSummary:
    """Run a distillation as configured; returns its summary (also written to ``<store>/runs/``)."""
    from recbole_bundlellm.config import BundleConfig

    config = BundleConfig("BundleLLM", None, list(config_files), dict(config_dict or {}))
    host = get_host()
    distiller = _Distiller(config, host, progress)
    sessions = load_training_sessions(config)
    limit = config["distill_max_sessions"]
    if limit:
        sessions = sessions[:limit]
    return distiller.run(sessions)
