"""Settings of the teacher (the YAML key ``teacher:``): where it is, which model, how to call it.

The API key itself is never part of the settings: only the *name* of the environment variable
that holds it (``api_key_env``), so YAML files, logs and run summaries cannot leak it.
"""

from __future__ import annotations

import dataclasses

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from recbole_bundlellm.settings import ranged

BASE_URL_ENV = "OPENAI_BASE_URL"
#: What ``api_key_env`` must end with: a variable named for a key, never e.g. $HOME or $AWS_SESSION.
KEY_SUFFIXES = ("_KEY", "_TOKEN")


def redact_url(url: str) -> str:
    """``url`` without a ``user:password@`` part (some proxies carry credentials there)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


@dataclass
class TeacherSettings:
    """How to reach and call an OpenAI-compatible chat endpoint (the YAML key ``teacher:``)."""

    # (str | None) the endpoint, e.g. "http://127.0.0.1:8088/v1"; None -> $OPENAI_BASE_URL
    base_url: str | None = None
    # (str) the model name sent with every request (a local server's --model_alias)
    model: str = "smollm2-135m-instruct"
    # (float) sampling temperature; 0 makes answers (nearly) deterministic
    temperature: float = ranged(0.0, min=0)
    # (int | None) sampling seed sent with each request; None sends none
    seed: int | None = 0
    # (int) at most this many tokens per answer
    max_tokens: int = ranged(256, min=1)
    # (float) seconds one HTTP request may take before it counts as a timeout (and is retried)
    timeout: float = ranged(120.0, above=0)
    # (int) at most this many requests in flight at once
    concurrency: int = ranged(2, min=1)
    # (int) retries after the first attempt on timeouts, dropped connections, 429 and 5xx
    max_retries: int = ranged(6, min=0)
    # (float) backoff: sleep uniform(0, min(backoff_max, backoff_base * 2**attempt)) seconds
    backoff_base: float = ranged(0.5, min=0)
    # (float) the longest single sleep between attempts (also caps a server's Retry-After)
    backoff_max: float = ranged(30.0, min=0)
    # (str) name of the environment variable holding the API key (the key is never in YAML); it
    # must end in _KEY or _TOKEN: its value is sent to base_url, so it cannot name just any variable
    api_key_env: str = "OPENAI_API_KEY"
    # (int) answers longer than this many characters are cut to it when stored (counted as
    # answers_truncated): a runaway answer must not fill the store
    max_answer_chars: int = ranged(100_000, min=1)
    # (float) estimated cost per million prompt tokens (for run summaries)
    price_input_per_1m: float = ranged(0.0, min=0)
    # (float) estimated cost per million completion tokens
    price_output_per_1m: float = ranged(0.0, min=0)
    # (str) JSON answers (an extractor's declared schema) asked with response_format: auto (sent;
    # an endpoint that refuses it is remembered and asked in free text), on (sent; a refusal stops
    # the run), off (never sent: the requests of stores made before structured outputs existed)
    structured_outputs: str = ranged("auto", choices=["auto", "on", "off"])
    # (str) sync: one HTTP request per call as an extractor asks; batch: the calls a distillation
    # still needs go through the Files and Batches APIs (cheaper, slower; resumable)
    mode: str = ranged("sync", choices=["sync", "batch"])
    # (float) batch mode: seconds between two looks at a running batch
    batch_poll_interval: float = ranged(30.0, above=0)
    # (int) batch mode: at most this many requests per batch (OpenAI's limit is 50000); more wait
    # for the next batch
    batch_max_requests: int = ranged(50_000, min=1)
    # (float | None) batch mode: cost per million prompt tokens of a batched call; ~ = half of
    # price_input_per_1m (the usual batch discount)
    price_batch_input_per_1m: float | None = ranged(None, min=0, none_means="half of price_input_per_1m")
    # (float | None) batch mode: cost per million completion tokens of a batched call; ~ = half of
    # price_output_per_1m
    price_batch_output_per_1m: float | None = ranged(None, min=0, none_means="half of price_output_per_1m")

    def validate(self) -> None:
        """What a bound cannot say (the ranged fields are checked by load_settings); raises
        ``ValueError`` naming the setting."""
        if self.base_url is not None and not self.base_url.strip():
            raise ValueError("base_url must not be empty (leave it out to use $OPENAI_BASE_URL)")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        if not self.model.strip():
            raise ValueError("model must not be empty")
        if not self.api_key_env.strip():
            raise ValueError("api_key_env must name an environment variable")
        if not self.api_key_env.upper().endswith(KEY_SUFFIXES):
            raise ValueError(f"api_key_env must name a variable ending in {' or '.join(KEY_SUFFIXES)}, got "
                             f"{self.api_key_env!r}: its value is sent to the teacher endpoint, so only a key's "
                             "variable may be named")

    def resolved_base_url(self) -> str:
        """``base_url``, else ``$OPENAI_BASE_URL``; a clear error when neither is set."""
        url = self.base_url or os.environ.get(BASE_URL_ENV, "").strip()
        if not url:
            raise ValueError(
                f"no teacher endpoint: set `teacher.base_url` in the config or the {BASE_URL_ENV} "
                "environment variable (e.g. http://127.0.0.1:8088/v1; `bundlellm teacher serve` "
                "starts a local one on the embedded model)"
            )
        return url.rstrip("/")

    def identity(self) -> dict[str, Any]:
        """What makes answers differ (part of knowledge fingerprints): never URL or key.

        ``structured_outputs`` counts only for extractors that declare a schema (see
        :func:`~recbole_bundlellm.knowledge.extractor.extractor_fingerprint`); ``mode`` never
        does: a batched answer is the same call as a synchronous one.
        """
        return {"model": self.model, "temperature": self.temperature, "seed": self.seed,
                "max_tokens": self.max_tokens, "structured_outputs": self.structured_outputs}

    def batch_prices(self) -> tuple[float, float]:
        """(input, output) cost per million tokens of a batched call: the batch prices when set,
        else half the synchronous ones (OpenAI's and Anthropic's batch discount)."""
        price_in = self.price_input_per_1m / 2 if self.price_batch_input_per_1m is None else self.price_batch_input_per_1m
        price_out = (self.price_output_per_1m / 2 if self.price_batch_output_per_1m is None
                     else self.price_batch_output_per_1m)
        return price_in, price_out

    def public(self) -> dict[str, Any]:
        """JSON-friendly settings for logs and run summaries (no secrets: the key is not a field)."""
        url = self.base_url or os.environ.get(BASE_URL_ENV) or None
        return {**dataclasses.asdict(self), "base_url": redact_url(url) if url else None}
