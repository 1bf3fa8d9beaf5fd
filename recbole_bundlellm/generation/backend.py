"""The generation backend contract: chat prompts in, per prompt a list of completions out.

A model never talks to an LLM directly: it asks its :class:`GenerationBackend`, chosen by the
config key ``generation_backend`` among the backends plugins register through the
``register_generation_backends`` hook (built in: ``transformers``, the student's weights in this
process, and ``openai``, the student served by an OpenAI-compatible server). Batching,
concurrency, stop strings, retries and caching are the backend's business; the model sees only
:meth:`~GenerationBackend.generate`, :attr:`~GenerationBackend.stats` and
:meth:`~GenerationBackend.describe`.

The model's decoding settings (:class:`GenerationConfig`) are one object it owns and hands to
the backend in the :class:`GenerationContext`; a backend reads them at every call, so a model
that changes them (label biases chosen on valid, K voted samples) changes what the next call
does.

This module imports no torch: the plugin host imports the contract to check registrations.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.settings import Component, SettingsError, check_fields, ranged, settings_dict

#: The folder beside a run's output folder ``<out>`` where a backend keeps what must outlive a
#: killed run (a served student's answers): ``<out>.answers``.
STATE_SUFFIX = ".answers"
#: One prompt: chat messages ``{"role": ..., "content": ...}``; a final assistant message is a
#: started answer that the model continues.
Messages = Sequence[dict[str, str]]
#: Called with each batch's prompt token ids; the batch generates inside the context it returns
#: (RouteDK's mixture of experts sets its per-input weights there).
BatchContext = Callable[[Sequence[Sequence[int]]], AbstractContextManager]


class GenerationError(BundleLLMError, RuntimeError):
    """A backend that cannot generate as asked (a server that keeps refusing, a missing model)."""


@dataclass
class GenerationConfig:
    """How to generate: lengths, batching and (optional) seeded sampling.

    ``batch_size`` counts prompts per ``model.generate`` call; when sampling, each prompt takes
    ``num_return_sequences`` rows of that batch. Greedy decoding returns that many identical
    copies. ``max_prompt_tokens`` cuts longer prompts from the left (a warning, and counted).
    """

    # ranged(row=...): the field is that config key (BundleLLM's) under another name; errors name the key.
    max_new_tokens: int = ranged(256, row="max_new_tokens")
    batch_size: int = ranged(8, row="generation_batch_size")
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = ranged(0.95, row="top_p")
    num_return_sequences: int = ranged(1, min=1)
    seed: int | None = None
    max_prompt_tokens: int | None = ranged(None, row="max_prompt_tokens")
    # Generation of a row ends once its text contains one of these (e.g. "}" closes the answer
    # dict), so small models do not ramble on to max_new_tokens after answering.
    stop_strings: tuple[str, ...] = ()
    # Added to these tokens' logits at every step (as the OpenAI API's logit_bias): a decoding
    # calibration, e.g. against an answer shape a fine-tuned student over-predicts.
    logit_bias: dict[int, float] | None = None
    # With sampling and num_return_sequences > 1, run each prompt through the model once and
    # give its key/value cache to all of its samples (False: HF's way, the prompt K times).
    shared_prefill: bool = True

    def __post_init__(self) -> None:
        # Built in code (BundleLLM), not by load_settings: the guard is here, with the same rules.
        check_fields(self)
        self.validate()

    def validate(self) -> None:
        """What one rule cannot say: sampling needs a temperature > 0 (greedy decoding ignores it)."""
        if self.do_sample and self.temperature <= 0:
            raise SettingsError(f"temperature must be > 0 when sampling (do_sample: true), got {self.temperature}")


@dataclass
class GenerationContext:
    """What a backend generates with, handed to :meth:`GenerationBackend.open` by the model.

    ``generation`` is the model's own decoding settings, read at every call. ``model`` and
    ``tokenizer`` are the student in this process (given to backends whose ``in_process`` is
    true; ``None`` otherwise). ``state_dir`` is a folder for what must outlive a killed run (a
    remote backend's answers), beside the run's output folder.
    """

    generation: GenerationConfig
    model: Any = None
    tokenizer: Any = None
    batch_context: BatchContext | None = None
    state_dir: Path | None = None


class GenerationBackend(Component, ABC):
    """Base class of generation backends: ``name`` (the value of ``generation_backend`` and the
    YAML key of its settings), ``description`` and ``Settings`` (a dataclass with defaults).

    The model creates its backend when it is built (so a settings mistake stops the run before
    any data is read), calls :meth:`open` once before the first generation, then
    :meth:`generate` as often as it needs.
    """

    #: True: the backend generates with the student's weights in this process, and the model
    #: loads them for it. False: the student is served elsewhere; the model loads no weights.
    in_process: ClassVar[bool] = True

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self._stats: dict[str, float] = {}

    @abstractmethod
    def open(self, context: GenerationContext) -> None:
        """Get ready to generate with ``context`` (called once, before the first :meth:`generate`)."""

    @abstractmethod
    def generate(self, prompts: Sequence[Messages], *, progress: bool | None = None,
                 desc: str = "generating") -> list[list[str]]:
        """Per prompt, in order, ``num_return_sequences`` completions (the new text only, cut
        after the first stop string it contains). ``progress``: a bar of prompts done (``None``:
        on a terminal only)."""

    @property
    def stats(self) -> dict[str, float]:
        """Counters accumulated over calls (prompts, sequences, tokens, seconds, ...): the run's
        ``info.generation``."""
        return self._stats

    def reset_stats(self) -> None:
        """Zero :attr:`stats` (what was spent choosing settings on valid is not the test's cost)."""
        self._stats = dict.fromkeys(self._stats, 0)

    def describe(self) -> dict[str, Any]:
        """What the run records about the backend (``info.generation_backend``): its name and
        settings, never a secret."""
        return {"name": self.name, **settings_dict(self.settings)}

    def close(self) -> None:
        """Release what :meth:`open` took (connections); a closed backend may be opened again."""


def check_in_process(backend: type[GenerationBackend], model: str, reason: str | None) -> None:
    """Refuse a backend that serves the student elsewhere for a model that needs its weights in
    this process (``reason``: why; ``None``: any backend serves it)."""
    if reason is not None and not backend.in_process:
        raise SettingsError(f"generation_backend: {backend.name} serves the student from another process, but "
                            f"{model} {reason}; use generation_backend: transformers")


__all__ = ["STATE_SUFFIX", "BatchContext", "GenerationBackend", "GenerationConfig", "GenerationContext",
           "GenerationError", "Messages", "check_in_process"]
