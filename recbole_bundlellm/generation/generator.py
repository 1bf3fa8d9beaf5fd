"""Batched chat generation with a local causal LM: the engine of the ``transformers`` backend.

Prompts are chat message lists. They are rendered with the tokenizer's chat template, sorted by
length so each batch pads little, left-padded, generated in batches and returned in the
caller's order.

Sampling does not use the global RNG: each returned sequence gets its own generator seeded from
(config seed, prompt text, sequence index), and a token is drawn as the argmax of the
temperature/top-p filtered logits plus Gumbel noise (an exact sample from the filtered
distribution). So a seeded sample of a prompt does not depend on which other prompts share its
batch, on the batch size, or on the order of the prompts.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch

from recbole_bundlellm.generation.backend import BatchContext, GenerationConfig, Messages
from recbole_bundlellm.generation.chat import cut_prompt, encode_texts, prompt_token_ids, render_chat
from recbole_bundlellm.llm.batches import left_padded
from recbole_bundlellm.progress import progress_bar

logger = logging.getLogger(__name__)


def _cache_argument() -> str:
    """``generate``'s name for a given key/value cache: ``cache`` from transformers 5 on."""
    import transformers

    return "cache" if int(transformers.__version__.split(".")[0]) >= 5 else "past_key_values"


def _row_seed(base: int, text: str, occurrence: int, sequence: int) -> int:
    digest = hashlib.sha256(f"{base}|{occurrence}|{sequence}|{text}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class _GumbelSampler:
    """Logits processor that turns greedy decoding into seeded per-row sampling."""

    def __init__(self, row_seeds: list[int], temperature: float, top_p: float) -> None:
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        self.row_seeds = row_seeds
        self.warpers: list[Any] = []
        if temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(temperature))
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))
        self.generators: list[torch.Generator] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.generators is None:
            # Generators live on the logits' device, so no per-step host transfers are needed.
            self.generators = [
                torch.Generator(device=scores.device).manual_seed(seed) for seed in self.row_seeds
            ]
        scores = scores.float()
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        # Every row draws once per step whether or not it has finished, so a row's stream of
        # draws depends only on its own seed and the step.
        uniform = torch.stack(
            [
                torch.rand(scores.shape[-1], generator=gen, device=scores.device)
                for gen in self.generators
            ]
        )
        tiny = torch.finfo(uniform.dtype).tiny
        gumbel = -torch.log(-torch.log(uniform.clamp(min=tiny, max=1.0 - 1e-7)))
        return scores + gumbel


class BatchGenerator:
    """Generate completions for many chat prompts with real batching.

    ``stats`` accumulates over calls (``reset_stats()`` clears it): prompts, sequences, batches,
    prompt_tokens, new_tokens, padding_tokens, truncated_prompts, shared_prefills (prompts whose
    samples shared one prefill), seconds.
    """

    def __init__(self, model: Any, tokenizer: Any, config: GenerationConfig | None = None,
                 batch_context: BatchContext | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or GenerationConfig()
        #: Called with each batch's prompt token ids; the batch generates inside the context it
        #: returns (a mixture of experts sets its per-input weights there).
        self.batch_context = batch_context
        #: The token ids of the last generate() call's prompts, in the caller's order.
        self.last_prompt_ids: list[list[int]] = []
        self.stats: dict[str, float] = {}
        self.reset_stats()

    # ------------------------------------------------------------------ public

    def reset_stats(self) -> None:
        """Zero the accumulated statistics."""
        self.stats = dict.fromkeys(
            ("prompts", "sequences", "batches", "prompt_tokens", "new_tokens",
             "padding_tokens", "truncated_prompts", "shared_prefills"),
            0,
        )
        self.stats["seconds"] = 0.0

    def render(self, messages: Messages) -> str:
        """The prompt text for one chat (:func:`~recbole_bundlellm.generation.chat.render_chat`)."""
        return render_chat(self.tokenizer, messages)

    def prompt_ids(self, messages: Messages) -> list[int]:
        """The token ids of one rendered prompt, never cut (what training and token budgets measure)."""
        return prompt_token_ids(self.tokenizer, messages)

    def generate(self, prompts: Sequence[Messages], *, progress: bool | None = None,
                 desc: str = "generating") -> list[list[str]]:
        """Per prompt, ``num_return_sequences`` decoded completions (new tokens only).

        ``progress``: a bar of prompts done, prompts/s and ETA (``None``: on a terminal only).
        """
        if not prompts:
            return []
        start = time.perf_counter()
        texts = [self.render(messages) for messages in prompts]
        token_ids = self._tokenize(texts)
        self.last_prompt_ids = token_ids  # what the model read per prompt (cut to max_prompt_tokens)
        row_seeds = self._sequence_seeds(texts)
        order = sorted(range(len(texts)), key=lambda i: len(token_ids[i]), reverse=True)
        results: list[list[str]] = [[] for _ in texts]
        size = self.config.batch_size
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        was_training = bool(getattr(self.model, "training", False))
        self.model.eval()
        bar = progress_bar(total=len(texts), desc=desc, unit="prompt", enabled=progress)
        try:
            for batch in batches:
                outputs = self._generate_batch(
                    [token_ids[i] for i in batch],
                    [row_seeds[i] for i in batch] if row_seeds else None,
                )
                for index, completions in zip(batch, outputs):
                    results[index] = completions
                bar.update(len(batch))
        finally:
            bar.close()
            if was_training:
                self.model.train()
        self.stats["prompts"] += len(texts)
        self.stats["sequences"] += len(texts) * self.config.num_return_sequences
        self.stats["batches"] += len(batches)
        self.stats["seconds"] += time.perf_counter() - start
        return results

    # ------------------------------------------------------------------ internals

    @property
    def _device(self) -> torch.device:
        device = getattr(self.model, "device", None)
        return device if device is not None else next(self.model.parameters()).device

    @property
    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self._eos_ids[0]

    @property
    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        candidates: list[Any] = [self.tokenizer.eos_token_id]
        model_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        candidates.extend(model_eos if isinstance(model_eos, (list, tuple)) else [model_eos])
        for candidate in candidates:
            if candidate is not None and candidate not in ids:
                ids.append(int(candidate))
        if not ids:
            raise ValueError("the tokenizer and model define no eos token; cannot stop generation")
        return ids

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        token_ids = encode_texts(self.tokenizer, texts)
        limit = self.config.max_prompt_tokens
        if limit is not None:
            truncated = sum(len(ids) > limit for ids in token_ids)
            if truncated:
                token_ids = [cut_prompt(ids, limit) for ids in token_ids]
                self.stats["truncated_prompts"] += truncated
                logger.warning(
                    "truncated %d of %d prompts from the left to %d tokens",
                    truncated, len(token_ids), limit,
                )
        return token_ids

    def _sequence_seeds(self, texts: list[str]) -> list[list[int]] | None:
        if not self.config.do_sample:
            return None
        base = self.config.seed
        if base is None:  # unseeded: still follow torch.manual_seed if the caller set it
            base = int(torch.randint(0, 2**62, (1,)).item())
        seen: Counter[str] = Counter()
        seeds = []
        for text in texts:
            occurrence = seen[text]
            seen[text] += 1
            seeds.append(
                [_row_seed(base, text, occurrence, j) for j in range(self.config.num_return_sequences)]
            )
        return seeds

    def _hf_generation_config(self) -> Any:
        from transformers import GenerationConfig as HFGenerationConfig

        base = getattr(self.model, "generation_config", None)
        config = copy.deepcopy(base) if base is not None else HFGenerationConfig()
        # Sampling is done by _GumbelSampler on top of greedy search, so the model's own
        # sampling defaults (some ship do_sample=True, top_k=50, ...) must not apply.
        config.update(
            do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None,
            num_return_sequences=1, max_new_tokens=self.config.max_new_tokens,
            pad_token_id=self._pad_id, eos_token_id=self._eos_ids,
        )
        return config

    def _generate_batch(
        self, token_ids: list[list[int]], row_seeds: list[list[int]] | None
    ) -> list[list[str]]:
        from transformers import LogitsProcessorList, StoppingCriteriaList

        n = self.config.num_return_sequences
        input_ids, attention_mask = left_padded(token_ids, self._pad_id)
        self.stats["prompt_tokens"] += sum(len(ids) for ids in token_ids)
        self.stats["padding_tokens"] += int((attention_mask == 0).sum())
        processors = LogitsProcessorList()
        if self.config.logit_bias:
            processors.append(_LogitBias(self.config.logit_bias))
        if row_seeds is not None:
            # One row per returned sequence; greedy rows would all be equal, so only sampling expands.
            input_ids = input_ids.repeat_interleave(n, dim=0)
            attention_mask = attention_mask.repeat_interleave(n, dim=0)
            flat_seeds = [seed for seeds in row_seeds for seed in seeds]
            processors.append(_GumbelSampler(flat_seeds, self.config.temperature, self.config.top_p))
        stopping = StoppingCriteriaList()
        if self.config.stop_strings:
            stopping.append(_StopOnStrings(self.tokenizer, self.config.stop_strings, input_ids.shape[1]))
        context = self.batch_context(token_ids) if self.batch_context is not None else nullcontext()
        with torch.inference_mode(), context:
            extra: dict[str, Any] = {}
            if row_seeds is not None and n > 1 and self.config.shared_prefill and input_ids.shape[1] > 1:
                extra[_cache_argument()] = self._prefill(input_ids[::n], attention_mask[::n], n)
            output = self.model.generate(
                input_ids=input_ids.to(self._device),
                attention_mask=attention_mask.to(self._device),
                generation_config=self._hf_generation_config(),
                logits_processor=processors,
                stopping_criteria=stopping,
                **extra,
            )
        texts, lengths = self._decode(output[:, input_ids.shape[1] :].cpu())
        self.stats["new_tokens"] += sum(lengths)  # tokens actually generated, eos included
        if row_seeds is None:
            return [[text] * n for text in texts]
        return [texts[i * n : (i + 1) * n] for i in range(len(token_ids))]

    def _prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n: int) -> Any:
        """The key/value cache of every prompt but its last token, computed once and repeated for
        the prompt's ``n`` samples; ``generate`` then runs only the last prompt token per row.

        Position ids follow the left padding exactly as ``generate`` computes them, so the cached
        keys equal those of an unshared run.
        """
        prefix, mask = input_ids[:, :-1].to(self._device), attention_mask[:, :-1].to(self._device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=prefix, attention_mask=mask, position_ids=positions, use_cache=True)
        # transformers 5 names the cache `cache`; older releases `past_key_values`.
        cache = out["cache"] if "cache" in out else out["past_key_values"]
        cache.batch_repeat_interleave(n)
        self.stats["shared_prefills"] += int(prefix.shape[0])
        return cache

    def _decode(self, new_tokens: torch.Tensor) -> tuple[list[str], list[int]]:
        eos = torch.tensor(self._eos_ids)
        is_eos = torch.isin(new_tokens, eos)
        texts, lengths = [], []
        for row, row_eos in zip(new_tokens, is_eos):
            # Tokens after the first eos are padding added once the row finished.
            stop = int(row_eos.nonzero()[0, 0]) + 1 if bool(row_eos.any()) else row.shape[0]
            lengths.append(stop)
            texts.append(_cut_at_stop(self.tokenizer.decode(row[:stop], skip_special_tokens=True),
                                      self.config.stop_strings))
        return texts, lengths


class _LogitBias:
    """Logits processor adding a fixed bias to some tokens."""

    def __init__(self, bias: dict[int, float]) -> None:
        self.ids = torch.tensor(list(bias), dtype=torch.long)
        self.values = torch.tensor(list(bias.values()), dtype=torch.float32)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        scores[:, self.ids.to(scores.device)] += self.values.to(scores.device, scores.dtype)
        return scores


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """The text up to and including the earliest stop string (all of it when none occurs)."""
    ends = [text.index(s) + len(s) for s in stops if s in text]
    return text[: min(ends)] if ends else text


class _StopOnStrings:
    """Stopping criterion: a row is done once its decoded new text contains a stop string.

    Decoding the new tokens (not matching token strings, as transformers' ``stop_strings`` does)
    works with every tokenizer, word-level ones included; answers are short, so it is cheap.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_length: int) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        done = [any(stop in text for stop in self.stops) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


#: GenerationConfig lives with the backend contract (it is every backend's); imported from here too.
__all__ = ["BatchGenerator", "GenerationConfig"]
