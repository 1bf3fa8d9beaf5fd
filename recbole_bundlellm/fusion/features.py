"""Session features: what a router may read besides the prompt's representation.

A router module (:class:`~recbole_bundlellm.fusion.router.RouterModule`) maps the prompt's
representation to expert weights. One that opts in (``uses_session_features = True``) is also
given a :class:`SessionFeatures` per batch: one row per prompt of simple facts about the session
it shows, taken from the student's view of the session (what the prompt holds):

- ``products``: the session's products (``len(session)``);
- ``prompt_tokens``: the prompt's token ids the student reads (after any cut to the token limits);
- ``knowledge:<kind>``: 1.0 when the prompt holds knowledge of ``kind`` (a knowledge line, or a
  worked example's own item such as its thought), else 0.0; one column per kind of the run's
  ``knowledge_use``, in that order (a multi-hot; no column for a run on raw data).

The values are raw (counts and 0/1); :meth:`SessionFeatures.log_scaled` is what the built-in
``input_aware`` router reads (``log1p`` of the counts, the multi-hot as it is).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from recbole_bundlellm.adaptation.strategy import StudentView
from recbole_bundlellm.data.sessions import Session

#: The count features, always present, first: products in the session and prompt tokens read.
COUNTS: tuple[str, ...] = ("products", "prompt_tokens")
#: The prefix of a knowledge kind's column (``knowledge:rules``).
KIND_PREFIX = "knowledge:"


def feature_names(kinds: Sequence[str]) -> tuple[str, ...]:
    """The feature names of a run whose knowledge kinds are ``kinds`` (its ``knowledge_use``)."""
    return (*COUNTS, *(KIND_PREFIX + k for k in kinds))


def session_feature_row(session: Session, view: StudentView, prompt_tokens: int,
                        names: Sequence[str]) -> tuple[float, ...]:
    """One session's values for ``names`` (:func:`feature_names`): ``session`` shown through
    ``view`` in a prompt of ``prompt_tokens`` tokens."""
    shown = {r.kind for r in view.items}
    known = {"products": float(len(session)), "prompt_tokens": float(prompt_tokens)}
    row = []
    for name in names:
        if name in known:
            row.append(known[name])
        elif name.startswith(KIND_PREFIX):
            row.append(float(name[len(KIND_PREFIX):] in shown))
        else:
            raise ValueError(f"unknown session feature '{name}' (known: {', '.join(COUNTS)}, {KIND_PREFIX}<kind>)")
    return tuple(row)


@dataclass(frozen=True)
class SessionFeatures:
    """Per-prompt session features for a batch: ``values`` ``[batch, len(names)]`` float32, one
    row per prompt in the batch's order, column ``j`` being ``names[j]`` (see the module
    docstring for what each name means)."""

    names: tuple[str, ...]
    values: torch.Tensor

    def __post_init__(self) -> None:
        if self.values.dim() != 2 or self.values.shape[1] != len(self.names):
            raise ValueError(f"session features must be [batch, {len(self.names)}] for {list(self.names)}, "
                             f"got {list(self.values.shape)}")

    @classmethod
    def from_rows(cls, names: Sequence[str], rows: Sequence[Sequence[float]]) -> SessionFeatures:
        """The features of rows of :func:`session_feature_row` values."""
        values = torch.tensor([list(r) for r in rows], dtype=torch.float32).reshape(len(rows), len(names))
        return cls(tuple(names), values)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def column(self, name: str) -> torch.Tensor:
        """``[batch]``: one feature's values."""
        return self.values[:, self.names.index(name)]

    def to(self, device: torch.device | str) -> SessionFeatures:
        return SessionFeatures(self.names, self.values.to(device))

    def log_scaled(self) -> torch.Tensor:
        """``[batch, len(names)]``: the counts (:data:`COUNTS`) as ``log1p(count)``, the
        knowledge kinds' 0/1 as they are. A session of 5 products reads 1.79, a prompt of 1000
        tokens 6.91: the counts' spread stays within a few units, as a router's other inputs."""
        counts = torch.tensor([n in COUNTS for n in self.names], device=self.values.device)
        return torch.where(counts, torch.log1p(self.values.clamp(min=0)), self.values)


__all__ = ["COUNTS", "KIND_PREFIX", "SessionFeatures", "feature_names", "session_feature_row"]
