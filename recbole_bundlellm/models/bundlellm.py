"""BundleLLM: a causal LM that reads a session and writes its bundles (AICL format)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.generation.examples import NearestSessions
from recbole_bundlellm.generation.generator import BatchGenerator, GenerationConfig
from recbole_bundlellm.generation.parser import parse_bundles
from recbole_bundlellm.generation.prompt import PROMPT_VERSION, build_messages
from recbole_bundlellm.llm import load_llm
from recbole_bundlellm.models.base import BundleGenerator, BundlePrediction
from recbole_bundlellm.settings import SettingsError

PROMPT_MODES = ("zero_shot", "one_shot")


class BundleLLM(BundleGenerator):
    """The student LLM as a RecBole model: prompt → batched generation → parsed bundles."""

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        self.prompt_mode = config["prompt_mode"]
        if self.prompt_mode not in PROMPT_MODES:
            raise SettingsError(f"prompt_mode '{self.prompt_mode}' is not one of {', '.join(PROMPT_MODES)}")
        # "auto" follows RecBole's own device choice, so `use_gpu: False` keeps the LLM on the CPU too.
        device = str(config["device"]) if config["llm_device"] == "auto" else config["llm_device"]
        # str(): `llm_model: 5` in YAML is a (missing) path, not a programming error.
        loaded = load_llm(str(config["llm_model"]), device=device, dtype=config["llm_dtype"])
        self.run_info = {
            "source": loaded.source,
            "path": str(loaded.path),
            "device": str(loaded.device),
            "dtype": str(loaded.dtype).removeprefix("torch."),
            "load_seconds": round(loaded.load_seconds, 2),
            "prompt_version": PROMPT_VERSION,
            "max_prompt_tokens": config["max_prompt_tokens"],
        }
        self.llm = loaded.model  # a submodule, so RecBole sees its (frozen) parameters
        self.llm.requires_grad_(False)
        self.generator = BatchGenerator(
            loaded.model,
            loaded.tokenizer,
            GenerationConfig(
                max_new_tokens=config["max_new_tokens"],
                batch_size=config["generation_batch_size"],
                do_sample=config["do_sample"],
                temperature=config["temperature"],
                top_p=config["top_p"],
                seed=config["seed"],
                max_prompt_tokens=config["max_prompt_tokens"],
                stop_strings=tuple(config["stop_strings"] or ()),
            ),
        )
        self.examples: NearestSessions | None = None

    def fit_bundles(self, train_sessions: Sequence[Session]) -> None:
        if self.prompt_mode == "one_shot":
            self.examples = NearestSessions(train_sessions)

    def worked_examples(self, sessions: Sequence[Session]) -> list[list[Session]]:
        """The solved training sessions shown before each session (none for zero-shot)."""
        if self.prompt_mode == "zero_shot":
            return [[] for _ in sessions]
        if self.examples is None:
            raise RuntimeError("one_shot prompting needs fit_bundles() with training sessions first")
        return self.examples.nearest(sessions, k=1)

    def generate_bundles(self, sessions: Sequence[Session]) -> list[BundlePrediction]:
        shots = self.worked_examples(sessions)
        words, prefix = self.config["max_title_words"], self.config["answer_prefix"] or ""
        prompts = [build_messages(s, ex, max_title_words=words, answer_prefix=prefix)
                   for s, ex in zip(sessions, shots)]
        # A bar per run (sessions done, rate, ETA) on a terminal; `show_progress: True` or
        # BUNDLELLM_PROGRESS=1 asks for it elsewhere too.
        texts = self.generator.generate(prompts, progress=self.config["show_progress"] or None,
                                        desc=f"{type(self).__name__} sessions")
        # metrics.json carries these (truncated_prompts above all: cut prompts change the scores).
        self.run_info["generation"] = {k: round(v, 3) if isinstance(v, float) else v
                                       for k, v in self.generator.stats.items()}
        out = []
        for session, examples, answers in zip(sessions, shots, texts):
            text = prefix + answers[0]
            parsed = parse_bundles(text, len(session))
            details = {
                "dropped_out_of_range": parsed.dropped_out_of_range,
                "dropped_duplicates": parsed.dropped_duplicates,
            }
            if examples:
                details["example_sessions"] = [e.session_id for e in examples]
            bundles = None if parsed.failed else [tuple(session.item_ids[i] for i in b) for b in parsed.bundles]
            out.append(BundlePrediction(session.session_id, bundles, text, parsed.reason, details))
        return out

