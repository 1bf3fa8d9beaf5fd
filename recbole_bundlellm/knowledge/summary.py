"""A distillation's plan (for the ``distill_started`` hook) and what it did: per knowledge type and
for the whole run (written to ``<store>/runs/*.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


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
            b = t.get("batch")
            if b:
                lines.append(f"batch: {b.get('calls', 0)} answers from {b.get('batches_created', 0)} new and "
                             f"{b.get('batches_resumed', 0)} resumed batches, {b.get('line_errors', 0)} failed lines "
                             f"asked again synchronously, tokens {b.get('usage', {}).get('prompt_tokens', 0)} in / "
                             f"{b.get('usage', {}).get('completion_tokens', 0)} out at batch prices "
                             f"(est. {b.get('cost', 0.0):.4f} of the cost), {b.get('seconds', 0.0):.1f} s")
            if t.get("structured_refusals"):
                lines.append(f"structured outputs: refused {t['structured_refusals']}x by the endpoint; asked "
                             f"{t.get('structured_format')} from then on")
        if self.knowledge_set:
            counts = ", ".join(f"{k} {v}" for k, v in self.knowledge_set_counts.items())
            lines.append(f"knowledge set: {self.knowledge_set} ({counts})")
        lines.extend(f"note: {note}" for note in self.notes)
        lines.append(f"wall time {self.wall_seconds:.1f} s")
        return "\n".join(lines)
