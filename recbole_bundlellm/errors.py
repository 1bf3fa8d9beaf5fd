"""The one base class of every error that is the user's to fix.

Bad data, an unknown config key, a plugin that fails in strict mode, a teacher that refuses, a
damaged store...: each area raises its own subclass (``DataError``, ``ConfigKeyError``, ...), and
all of them are :class:`BundleLLMError`. The ``bundlellm`` command prints such an error as one
line and exits with 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class BundleLLMError(Exception):
    """Base of the user-facing errors of recbole_bundlellm (see the module docstring)."""
