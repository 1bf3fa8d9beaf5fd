"""Errors of the teacher client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from recbole_bundlellm.errors import BundleLLMError

_E = TypeVar("_E", bound="TeacherError")


class TeacherError(BundleLLMError, RuntimeError):
    """Base class of teacher errors.

    ``partial`` is what the caller had already computed when the call failed (e.g. an extractor's
    content up to the failed turn), or None. A caller attaches it with :meth:`with_partial` before
    re-raising; the distiller keeps it in the failed record of that session.
    """

    def __init__(self, *args: object, partial: Mapping[str, Any] | None = None) -> None:
        super().__init__(*args)
        self.partial: dict[str, Any] | None = dict(partial) if partial is not None else None

    def with_partial(self: _E, content: Mapping[str, Any]) -> _E:
        """Attach (a shallow copy of) ``content`` as :attr:`partial`; returns this error."""
        self.partial = dict(content)
        return self


class TeacherRequestError(TeacherError):
    """The endpoint rejected one request for good (e.g. 400: prompt too long); retrying won't help.

    Extractors let it propagate; the distiller stores that session as failed with this message
    and :attr:`partial` as its content.
    """


class TeacherUnavailable(TeacherError):
    """The endpoint kept failing (timeouts, dropped connections, 429, 5xx) after every retry, or
    refused the credentials. The distillation stops; everything finished so far is kept."""


class TeacherCredentialsRefused(TeacherUnavailable):
    """The endpoint refused the credentials (HTTP 401 / 403): every later call would be refused
    too, so whatever asks the teacher (distill, TeacherLLM) stops at once."""


class TeacherStructuredOutputsRefused(TeacherError):
    """``teacher.structured_outputs: on`` and the endpoint refuses ``response_format`` in every
    form: a configuration problem, so the distillation stops (``auto`` would ask in free text)."""


class TeacherBatchError(TeacherError):
    """Batch mode cannot go on: the endpoint has no Files / Batches API, a batch failed its
    validation or was cancelled. The distillation stops; every answer already fetched is stored."""
