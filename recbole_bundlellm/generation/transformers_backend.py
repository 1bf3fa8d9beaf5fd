"""The built-in ``transformers`` backend: the student's weights in this process.

It is :class:`~recbole_bundlellm.generation.generator.BatchGenerator` behind the backend
contract: length-sorted batches, seeded per-row sampling with a shared prefill for K samples,
stop strings, logit biases, prompts cut to ``max_prompt_tokens``, and a per-batch context (RouteDK
mixes its LoRA experts there). The models that train the student or read its hidden states
(BundleSFT, PairSFT, RouteDK) work with this backend only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from recbole_bundlellm.generation.backend import GenerationBackend, GenerationContext, GenerationError, Messages
from recbole_bundlellm.settings import NoSettings


class TransformersBackend(GenerationBackend):
    """Generation with the in-process student (Hugging Face transformers, batched)."""

    name: ClassVar[str] = "transformers"
    description: ClassVar[str] = ("the student's weights in this process (transformers): batches, seeded "
                                  "samples, stop strings, logit biases, RouteDK's per-input experts")
    Settings: ClassVar[type] = NoSettings
    in_process: ClassVar[bool] = True

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self._generator: Any = None

    def open(self, context: GenerationContext) -> None:
        if context.model is None or context.tokenizer is None:
            raise GenerationError("the transformers backend generates with the student in this process; "
                                  "its model and tokenizer were not given")
        from recbole_bundlellm.generation.generator import BatchGenerator  # torch: only once it generates

        self._generator = BatchGenerator(context.model, context.tokenizer, context.generation,
                                         batch_context=context.batch_context)

    def generate(self, prompts: Sequence[Messages], *, progress: bool | None = None,
                 desc: str = "generating") -> list[list[str]]:
        if self._generator is None:
            raise GenerationError("the transformers backend is not open: call open(context) first")
        return self._generator.generate(prompts, progress=progress, desc=desc)

    @property
    def stats(self) -> dict[str, float]:
        """BatchGenerator's counters: prompts, sequences, batches, prompt_tokens, new_tokens,
        padding_tokens, truncated_prompts, shared_prefills, seconds."""
        return self._generator.stats if self._generator is not None else {}

    def reset_stats(self) -> None:
        if self._generator is not None:
            self._generator.reset_stats()

    def close(self) -> None:
        self._generator = None


__all__ = ["TransformersBackend"]
