"""Errors of the teacher client."""

from __future__ import annotations


class TeacherError(RuntimeError):
    """Base class of teacher errors."""


class TeacherRequestError(TeacherError):
    """The endpoint rejected one request for good (e.g. 400: prompt too long); retrying won't help.

    Extractors let it propagate; the distiller stores that session as failed with this message.
    """


class TeacherUnavailable(TeacherError):
    """The endpoint kept failing (timeouts, dropped connections, 429, 5xx) after every retry, or
    refused the credentials. The distillation stops; everything finished so far is kept."""
