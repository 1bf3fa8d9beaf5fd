"""The built-in ``openai`` backend: the student served by an OpenAI-compatible server.

vLLM (``--enable-lora --lora-modules NAME=PATH``), TGI, SGLang or llama.cpp's server answer the
student's chat prompts; this process loads no weights. Each prompt is sent as it is (the same
messages the ``transformers`` backend renders with the student's chat template; the server
renders them with its own) and the answer goes to the same parser. A LoRA adapter is addressed
by the name the server gives it (``openai.model``).

Every call goes through the teacher's client
(:class:`~recbole_bundlellm.teacher.client.TeacherClient`: ``concurrency`` requests in flight,
retries with backoff on timeouts, 429 and 5xx, the key read from ``$<api_key_env>``, never
written) into a call cache, a knowledge store's ``calls.jsonl``
(:class:`~recbole_bundlellm.knowledge.store.KnowledgeStore`): each answer is stored before it is
used, keyed by (model name, messages, sampling parameters, stop strings), so a killed run asked
again resumes without asking the server for anything it answered. The cache is
``openai.cache_dir``, else ``<run folder>.answers`` beside the run's output folder. It is kept
after the run: delete it to ask again (a server that now serves other weights under the same
name would otherwise be answered from it).

Decoding: greedy is ``temperature: 0``; K samples (``do_sample`` or ``vote_samples``) are K
requests with the seeds ``seed``, ``seed + 1``, ... (``top_p`` sent too). Stop strings are sent as
``stop``; an OpenAI server leaves the stop string it stopped at out of the answer, and it is put
back as the ``transformers`` backend keeps it (:func:`restore_stop`: exactly where the server says
which one it was, as vLLM and SGLang do; for the default ``"}"`` from the answer's unclosed ``{``
elsewhere). Not supported here: ``max_prompt_tokens`` (no tokenizer in this process: the model
refuses it) and logit biases.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from recbole_bundlellm.generation.backend import GenerationBackend, GenerationContext, GenerationError, Messages
from recbole_bundlellm.progress import progress_bar
from recbole_bundlellm.settings import ranged
from recbole_bundlellm.teacher.settings import TeacherSettings, redact_url

log = logging.getLogger(__name__)
#: Rejected requests reported one by one in the log; the rest are counted.
_SHOWN_REJECTIONS = 3


@dataclass(frozen=True)
class OpenAIBackendSettings:
    """Settings of the ``openai`` YAML key (``generation_backend: openai``)."""

    # (str) the server's OpenAI API, e.g. http://127.0.0.1:8000/v1 (vLLM); required
    base_url: str | None = None
    # (str) the model name sent with each request: vLLM's --served-model-name, or the NAME of a
    # LoRA adapter served with --lora-modules NAME=PATH; required
    model: str | None = None
    # (str) the environment variable holding the server's API key (never the key itself); it
    # must end in _KEY or _TOKEN; unset: no key (local servers need none). Not the teacher's
    # OPENAI_API_KEY by default: that key would be sent to whichever server serves the student
    api_key_env: str = "STUDENT_API_KEY"
    # (int) requests in flight at once (the server batches them)
    concurrency: int = ranged(8, min=1)
    # (float) seconds one request may take before it counts as a timeout (and is retried)
    timeout: float = ranged(300.0, above=0)
    # (int) retries after the first attempt on timeouts, dropped connections, 429 and 5xx
    max_retries: int = ranged(6, min=0)
    # (float) backoff: sleep uniform(0, min(backoff_max, backoff_base * 2**attempt)) seconds
    backoff_base: float = ranged(0.5, min=0)
    # (float) the longest single sleep between attempts
    backoff_max: float = ranged(30.0, min=0)
    # (str) the answer cache (a knowledge-store folder); ~: <run folder>.answers beside the run's output folder
    cache_dir: str | None = None

    def validate(self) -> None:
        """Required fields, and what the teacher's settings check (URL form, the key's variable)."""
        if not self.base_url:
            raise ValueError("base_url is required: the student server's OpenAI API, e.g. http://127.0.0.1:8000/v1")
        if not self.model:
            raise ValueError("model is required: the name the server serves the student under "
                             "(vLLM: --served-model-name, or a LoRA adapter's NAME from --lora-modules NAME=PATH)")
        self.client_settings(max_tokens=1, temperature=0.0, seed=None).validate()

    def client_settings(self, *, max_tokens: int, temperature: float, seed: int | None) -> TeacherSettings:
        """These settings as the teacher client's, with the decoding of one sample."""
        return TeacherSettings(base_url=self.base_url, model=str(self.model), temperature=temperature, seed=seed,
                               max_tokens=max_tokens, timeout=self.timeout, concurrency=self.concurrency,
                               max_retries=self.max_retries, backoff_base=self.backoff_base,
                               backoff_max=self.backoff_max, api_key_env=self.api_key_env)


#: ``matched`` when the server does not say which stop string it stopped at.
UNKNOWN = object()
#: A stop string that closes what an answer opened: the one stop it can be told it stopped at.
_OPENERS = {"}": "{", "]": "[", ")": "("}


def restore_stop(text: str, finish_reason: str | None, stops: Sequence[str], matched: Any = UNKNOWN) -> str:
    """The answer as the ``transformers`` backend gives it: up to and including the first stop string.

    An OpenAI server leaves out the stop string it stopped at, and says ``finish_reason: "stop"``
    for it and for the end-of-sequence token alike. ``matched`` is the stop string the server
    says it stopped at (vLLM's ``stop_reason``, SGLang's ``matched_stop``; ``None``: none, it
    ended the answer itself); it is put back. A server that does not say (llama.cpp's) is read by
    the answer: with one stop string that closes a bracket (the default ``"}"``), an answer that
    opened one and finished without closing it stopped at it. Otherwise nothing is added. A stop
    string in the text (a server that ignores ``stop``) ends it there.
    """
    if finish_reason == "stop" and stops and not any(s in text for s in stops):
        if matched is not UNKNOWN:
            if isinstance(matched, str) and matched in stops:
                text += matched
        elif len(stops) == 1 and stops[0] in _OPENERS and _OPENERS[stops[0]] in text:
            text += stops[0]
    ends = [text.index(s) + len(s) for s in stops if s in text]
    return text[: min(ends)] if ends else text


def _matched_stop(choice: Any) -> Any:
    """The stop string a choice says it stopped at (``None``: none), or :data:`UNKNOWN`."""
    extra = getattr(choice, "model_extra", None) or {}
    for field in ("stop_reason", "matched_stop"):  # vLLM, SGLang (an int there is a stop token id)
        if field in extra:
            return extra[field]
    return UNKNOWN


class OpenAIBackend(GenerationBackend):
    """Generation by an OpenAI-compatible server (chat completions), answers cached on disk."""

    name: ClassVar[str] = "openai"
    description: ClassVar[str] = ("the student served by an OpenAI-compatible server (vLLM with LoRA adapters "
                                  "by name, TGI, SGLang, llama.cpp); answers cached so a killed run resumes")
    Settings: ClassVar[type] = OpenAIBackendSettings
    in_process: ClassVar[bool] = False

    _COUNTERS = ("prompts", "sequences", "calls_made", "calls_cached", "retries", "failed_prompts",
                 "prompt_tokens", "new_tokens", "seconds")

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self._context: GenerationContext | None = None
        self._store: Any = None
        self._clients: dict[int | None, Any] = {}
        self._lock = threading.Lock()
        self.cache_dir: Path | None = None
        self.reset_stats()

    # ------------------------------------------------------------------ the contract

    def open(self, context: GenerationContext) -> None:
        from recbole_bundlellm.knowledge.store import KnowledgeStore

        if context.generation.logit_bias:
            raise GenerationError("the openai backend sends no logit biases (they are token ids of the student's "
                                  "tokenizer in this process); use generation_backend: transformers")
        if self.settings.cache_dir:
            folder = Path(self.settings.cache_dir).expanduser()
        elif context.state_dir is not None:
            folder = Path(context.state_dir)
        else:
            raise GenerationError("the openai backend keeps its answers on disk: set openai.cache_dir (outside "
                                  "`bundlellm run`, which keeps them beside the run's output folder)")
        self.cache_dir = folder.resolve()
        self._context = context
        self._store = KnowledgeStore(self.cache_dir)
        self._clients = {}

    def generate(self, prompts: Sequence[Messages], *, progress: bool | None = None,
                 desc: str = "generating") -> list[list[str]]:
        if self._context is None:
            raise GenerationError("the openai backend is not open: call open(context) first")
        if not prompts:
            return []
        start = time.perf_counter()
        config = self._context.generation
        n = config.num_return_sequences
        # Greedy answers are all alike: one request, n copies (as the transformers backend does).
        seeds = self._sample_seeds(config.seed, n) if config.do_sample else [config.seed]
        jobs = [(i, j) for i in range(len(prompts)) for j in range(len(seeds))]
        texts: dict[tuple[int, int], str] = {}
        with self._store.writer():  # each new answer is stored before it is used
            outcomes = self._ask([(prompts[i], seeds[j]) for i, j in jobs], progress, desc, len(prompts))
        rejected: dict[int, str] = {}  # prompt -> why its request was rejected for good
        stops = tuple(config.stop_strings)
        for (i, j), outcome in zip(jobs, outcomes):
            if isinstance(outcome, Exception):
                rejected.setdefault(i, str(outcome))
                texts[(i, j)] = ""  # the parser calls it an empty answer: a failed session
                continue
            # Stored as received and restored (_Sending); a cached answer of a server that ignored `stop`: cut.
            texts[(i, j)] = restore_stop(outcome.text, None, stops)
            self._stats["prompt_tokens"] += outcome.usage.prompt_tokens
            self._stats["new_tokens"] += outcome.usage.completion_tokens
        self._count_clients()
        if rejected and len(rejected) == len(prompts):
            first = next(iter(rejected.values()))
            raise GenerationError(f"the student server rejected every prompt ({len(rejected)}); first: {first}")
        for i, why in list(rejected.items())[:_SHOWN_REJECTIONS]:
            log.warning("openai backend: prompt %d of %d: %s (an empty answer: a failed session)", i + 1,
                        len(prompts), why)
        if len(rejected) > _SHOWN_REJECTIONS:
            log.warning("openai backend: %d more prompts rejected", len(rejected) - _SHOWN_REJECTIONS)
        self._stats["prompts"] += len(prompts)
        self._stats["sequences"] += len(prompts) * n
        self._stats["failed_prompts"] += len(rejected)
        self._stats["seconds"] += time.perf_counter() - start
        return [[texts[(i, j if config.do_sample else 0)] for j in range(n)] for i in range(len(prompts))]

    def reset_stats(self) -> None:
        self._stats = dict.fromkeys(self._COUNTERS, 0)
        self._stats["seconds"] = 0.0
        # What the clients had done by now is not counted again.
        self._counted = {key: _client_counts(client) for key, client in self._clients.items()}

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {"name": self.name, "base_url": redact_url(str(s.base_url)), "model": s.model,
                "api_key_env": s.api_key_env, "concurrency": s.concurrency, "timeout": s.timeout,
                "max_retries": s.max_retries, "cache_dir": str(self.cache_dir) if self.cache_dir else s.cache_dir}

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients = {}
        self._context = None

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _sample_seeds(seed: int | None, n: int) -> list[int | None]:
        """One request seed per sample: ``seed``, ``seed + 1``, ... (unseeded: random ones, which
        the cache cannot match again)."""
        base = seed if seed is not None else random.randrange(2**31)
        return [base + j for j in range(n)]

    def _client(self, seed: int | None) -> Any:
        """The client asking with ``seed`` (one per sample index: the seed is a client setting)."""
        with self._lock:
            client = self._clients.get(seed)
            if client is None:
                assert self._context is not None
                config = self._context.generation
                settings = self.settings.client_settings(
                    max_tokens=config.max_new_tokens, temperature=config.temperature if config.do_sample else 0.0,
                    seed=seed)
                extra: dict[str, Any] = {}
                if config.stop_strings:
                    extra["stop"] = list(config.stop_strings)
                if config.do_sample:
                    extra["top_p"] = float(config.top_p)
                client = self._clients[seed] = _student_client(settings, self._store, extra)
        return client

    def _ask(self, jobs: list[tuple[Messages, int | None]], progress: bool | None, desc: str,
             prompts: int) -> list[Any]:
        """Each job's reply (or the error of a request rejected for good), in order, ``concurrency``
        requests in flight.

        Daemon workers, as the teacher's: after Ctrl-C the process does not wait for the requests
        in flight; every answer received before is in the cache. A server that keeps failing
        (retries spent) or refuses the credentials stops the call: no request starts after it,
        those in flight finish (and are stored), then the error is raised.
        """
        from recbole_bundlellm.teacher.errors import TeacherRequestError

        results: list[Any] = [None] * len(jobs)
        done: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        pending = iter(range(len(jobs)))
        take = threading.Lock()  # guards pending, started and the stop flag's effect
        started = [0]
        stop = threading.Event()

        def work() -> None:
            while True:
                with take:
                    index = None if stop.is_set() else next(pending, None)
                    if index is None:
                        return
                    started[0] += 1
                messages, seed = jobs[index]
                try:
                    outcome: Any = self._client(seed).reply([dict(m) for m in messages])
                except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which judges it
                    outcome = exc
                done.put((index, outcome))

        for k in range(min(self.settings.concurrency, len(jobs))):
            threading.Thread(target=work, name=f"openai-backend-{k}", daemon=True).start()
        per_prompt = max(1, len(jobs) // max(1, prompts))
        bar = progress_bar(total=prompts, desc=desc, unit="prompt", enabled=progress)
        fatal: BaseException | None = None
        received = 0
        try:
            while received < len(jobs):
                with take:
                    if stop.is_set() and received == started[0]:
                        break  # every request that started has ended
                index, outcome = done.get()
                received += 1
                if isinstance(outcome, TeacherRequestError) or not isinstance(outcome, BaseException):
                    results[index] = outcome  # a rejection is of this request only: an empty answer
                else:  # the server is down, refuses the key, serves another model; the cache fails
                    fatal = fatal or outcome
                    stop.set()
                if received % per_prompt == 0:
                    bar.update(1)
        finally:
            bar.close()
        if fatal is not None:
            if not isinstance(fatal, Exception) or isinstance(fatal, GenerationError):
                raise fatal  # Ctrl-C in a worker, or already ours
            raise GenerationError(f"{fatal}; the answers received are kept in {self.cache_dir}: "
                                  "run the same command again to resume") from fatal
        return results

    def _count_clients(self) -> None:
        """Add what the clients did since the last count to :attr:`stats`."""
        with self._lock:
            clients = dict(self._clients)
        for key, client in clients.items():
            before = self._counted.get(key, (0, 0, 0))
            now = _client_counts(client)
            self._stats["calls_made"] += now[0] - before[0]
            self._stats["calls_cached"] += now[1] - before[1]
            self._stats["retries"] += now[2] - before[2]
            self._counted[key] = now


def _client_counts(client: Any) -> tuple[int, int, int]:
    return client.stats.calls_made, client.stats.calls_cached, client.stats.retries


def _student_client(settings: TeacherSettings, store: Any, extra: dict[str, Any]) -> Any:
    """A :class:`~recbole_bundlellm.teacher.client.TeacherClient` for the student server, sending
    ``extra`` (stop strings, top_p) with every chat completion; they are part of each call's key."""
    import openai

    from recbole_bundlellm.teacher.client import NO_KEY, TeacherClient
    from recbole_bundlellm.teacher.errors import TeacherError

    class StudentServerClient(TeacherClient):
        """The teacher's client, naming the student server in its errors."""

        def request_params(self, *, max_tokens: int | None = None,
                           temperature: float | None = None) -> dict[str, Any]:
            return {**super().request_params(max_tokens=max_tokens, temperature=temperature), **extra}

        def _where(self) -> str:  # the one place the client names its endpoint
            return f"student server {redact_url(self.base_url)} (model {self.model})"

        def check_model(self) -> None:
            try:
                super().check_model()
            except TeacherError as exc:
                raise GenerationError(str(exc).replace("set teacher.model", "set openai.model")) from None

        def close(self) -> None:
            self._client.close()

    api_key = os.environ.get(settings.api_key_env) or NO_KEY
    raw = openai.OpenAI(base_url=settings.resolved_base_url(), api_key=api_key, timeout=settings.timeout,
                        max_retries=0)  # the client retries, with its own backoff
    return StudentServerClient(settings, store, client=_Sending(raw, extra) if extra else raw)


class _Sending:
    """An ``openai.OpenAI`` client whose chat completions also send ``extra`` (the teacher's
    client sends model, messages, temperature, max_tokens and seed only), and whose answers get
    back the stop string the server stripped (:func:`restore_stop`), where the response still
    says which one it was: so the cache stores the answer as the transformers backend gives it."""

    def __init__(self, client: Any, extra: dict[str, Any]) -> None:
        self._client = client
        self._extra = extra
        self.chat = _Chat(self._create)

    def _create(self, **kwargs: Any) -> Any:
        response = self._client.chat.completions.create(**kwargs, **self._extra)
        stops = tuple(self._extra.get("stop") or ())
        if stops and not isinstance(response, (str, bytes)):  # a body that is no completion: the client says so
            for choice in getattr(response, "choices", None) or []:
                message = getattr(choice, "message", None)
                if message is not None and isinstance(message.content, str):
                    message.content = restore_stop(message.content, choice.finish_reason, stops,
                                                   _matched_stop(choice))
        return response

    def __getattr__(self, name: str) -> Any:  # base_url, api_key, models, close
        return getattr(self._client, name)


@dataclass(frozen=True)
class _Completions:
    create: Any


class _Chat:
    def __init__(self, create: Any) -> None:
        self.completions = _Completions(create)


__all__ = ["OpenAIBackend", "OpenAIBackendSettings", "restore_stop"]
