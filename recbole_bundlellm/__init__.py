"""recbole_bundlellm: LLM-based bundle generation with knowledge distillation, on RecBole."""

from recbole_bundlellm import compat as _compat  # noqa: F401  (must run before recbole)
from recbole_bundlellm import moved as _moved

_moved.install()

__version__ = "0.1.0"
