"""Secrets never leave a run: secret-named settings and URL credentials are redacted from what is
written (config.yaml, the recorded command line), and the teacher's key is refused in a config."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from recbole_bundlellm.settings import SettingsError
from recbole_bundlellm.teacher.settings import redact_url

#: Names of settings that hold secrets: never written to config.yaml or the recorded command line.
#: ``max_tokens`` or ``api_key_env`` (a variable's *name*) are not secrets.
SECRET_KEY = re.compile(r"(?:^|_)(?:token|secret|password|passwd|credentials?|(?:api|secret|private|access)_?key)$",
                        re.IGNORECASE)
REDACTED = "<redacted>"


def _refuse_secrets_in_teacher(block: Any) -> None:
    """The teacher's API key comes from the environment only: a key in a config would be copied to
    config.yaml, logs and shell history."""
    if not isinstance(block, Mapping):
        return  # load_settings reports a block that is not a mapping
    for name in block:
        if SECRET_KEY.search(str(name)):
            env = block.get("api_key_env") if isinstance(block.get("api_key_env"), str) else "OPENAI_API_KEY"
            raise SettingsError(f"teacher.{name}: secrets never go in a config; the teacher reads its API key "
                                f"from the environment variable ${env} (set teacher.api_key_env to name another)")


def redact_secrets(value: Any) -> Any:
    """``value`` with every secret-named key's value replaced by ``"<redacted>"`` and credentials
    cut from URLs (``http://user:pw@host`` -> ``http://***@host``), at any depth."""
    if isinstance(value, Mapping):
        return {k: (REDACTED if v is not None and SECRET_KEY.search(str(k)) else redact_secrets(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_secrets(v) for v in value]
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return redact_url(value)
    return value


def _redact_argument(arg: str) -> str:
    key, sep, raw = arg.partition("=")
    if not arg.startswith("--") or not sep:
        return arg
    if SECRET_KEY.search(key[2:]):
        return f"{key}={REDACTED}"
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return arg
    redacted = redact_secrets(value)
    if redacted == value:
        return arg  # as typed
    return f"{key}={yaml.safe_dump(redacted, default_flow_style=True, width=10**6).strip()}"


def redact_command(argv: Sequence[str]) -> str:
    """The command line as one string, with secret ``--key=value`` settings redacted."""
    return " ".join(_redact_argument(str(arg)) for arg in argv)
