"""BundleLLM: a causal LM that reads a session and writes its bundles (prompted, not trained).

What the prompt holds besides the session is the adaptation strategy's choice (``adaptation:``):
none (``prompt_mode`` zero-/one-shot), or ``icl`` (retrieved solved sessions and knowledge).
Who answers is the generation backend (``generation_backend``): ``transformers`` generates with
the process-wide shared copy of the LLM (this model never changes it: no adapters, no flags);
``openai`` asks an OpenAI-compatible server that serves the student, and no weights are loaded
here. Either way the prompts and the parser are the same.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from recbole_bundlellm.adaptation import EXAMPLE, AdaptationContext, AdaptationStrategy, Retrieved, StudentView
from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.extension.host import PluginError
from recbole_bundlellm.generation.backend import (STATE_SUFFIX, GenerationBackend, GenerationConfig, GenerationContext,
                                                  check_in_process)
from recbole_bundlellm.generation.chat import prompt_token_ids
from recbole_bundlellm.generation.examples import NearestSessions
from recbole_bundlellm.generation.parser import parse_answer
from recbole_bundlellm.generation.prompt import PROMPT_FORMATS, PromptStyle, build_messages, view_messages
from recbole_bundlellm.llm import LoadedLLM, load_llm
from recbole_bundlellm.models.base import BundleGenerator, BundlePrediction
from recbole_bundlellm.settings import SettingsError

PROMPT_MODES = ("zero_shot", "one_shot")
logger = logging.getLogger(__name__)


# The student's prompt, as functions: TeacherLLM asks its teacher with exactly these prompts.

def check_prompt_mode(config: Any) -> str:
    """``prompt_mode``, checked (zero_shot | one_shot)."""
    mode = config["prompt_mode"]
    if mode not in PROMPT_MODES:
        raise SettingsError(f"prompt_mode '{mode}' is not one of {', '.join(PROMPT_MODES)}")
    return mode


def prompt_style(config: Any) -> PromptStyle:
    """The :class:`PromptStyle` of ``prompt_format``, ``max_title_words``, ``show_categories`` and
    ``answer_prefix`` (the format checked)."""
    if config["prompt_format"] not in PROMPT_FORMATS:
        raise SettingsError(f"prompt_format '{config['prompt_format']}' is not one of {', '.join(PROMPT_FORMATS)}")
    return PromptStyle(config["prompt_format"], config["max_title_words"],
                       bool(config["show_categories"]), config["answer_prefix"] or "")


def shot_views(sessions: Sequence[Session], prompt_mode: str, examples: NearestSessions | None) -> list[StudentView]:
    """The zero-/one-shot views (no adaptation strategy): nothing, or the nearest training session
    as a worked example (``examples``: the training sessions' :class:`NearestSessions`)."""
    if prompt_mode == "zero_shot":
        return [StudentView() for _ in sessions]
    if examples is None:
        raise RuntimeError("one_shot prompting needs fit_bundles() with training sessions first")
    return [StudentView(tuple(Retrieved(EXAMPLE, "", 1.0, e) for e in ex))
            for ex in examples.nearest(sessions, k=1)]


def session_prompts(sessions: Sequence[Session], views: Sequence[StudentView], style: PromptStyle, *,
                    adapted: bool) -> list[list[dict[str, str]]]:
    """The chat messages of each session seen through its view (``adapted``: a strategy's view)."""
    if not adapted and style.format == "aicl":
        # The zero-/one-shot prompts exactly as before adaptation strategies existed.
        return [build_messages(s, v.examples, max_title_words=style.max_title_words,
                               answer_prefix=style.answer_prefix) for s, v in zip(sessions, views)]
    return [view_messages(s, v, style) for s, v in zip(sessions, views)]


def voted_prediction(session: Session, texts: Sequence[str], style: PromptStyle, threshold: float) -> BundlePrediction:
    """The bundles at least ``threshold`` of the answers ``texts`` agree on (:func:`~recbole_bundlellm.fusion.vote.vote`)."""
    from recbole_bundlellm.fusion.vote import vote

    parsed = [parse_prediction(session, text, style) for text in texts]
    result = vote([p.bundles for p in parsed], threshold)
    details: dict[str, Any] = {"votes": len(texts), "parsed_answers": result.parsed,
                               "support": list(result.support), "fallback_answer": result.fallback}
    if result.bundles is None:
        return BundlePrediction(session.session_id, None, "\n---\n".join(texts), parsed[0].failure, details)
    bundles = [tuple(item for item in session.item_ids if item in bundle) for bundle in result.bundles]
    return BundlePrediction(session.session_id, bundles, "\n---\n".join(texts), None, details)


def with_view_details(prediction: BundlePrediction, view: StudentView) -> BundlePrediction:
    """``prediction`` with what its session's view held: the example sessions and the count of
    knowledge items per kind (predictions.jsonl shows what the student saw)."""
    if view.examples:
        prediction.details["example_sessions"] = [e.session_id for e in view.examples]
    kinds = sorted({r.kind for r in view.knowledge()})
    if kinds:
        prediction.details["knowledge"] = {k: len(view.knowledge(k)) for k in kinds}
    return prediction


def parse_prediction(session: Session, text: str, style: PromptStyle) -> BundlePrediction:
    """``text`` (the answer, its prefix included) parsed into the session's bundles; an answer
    without a usable bundle is a failed prediction with the parser's reason."""
    parsed = parse_answer(text, len(session), style.format)
    details: dict[str, Any] = {
        "dropped_out_of_range": parsed.dropped_out_of_range,
        "dropped_duplicates": parsed.dropped_duplicates,
    }
    bundles = None if parsed.failed else [tuple(session.item_ids[i] for i in b) for b in parsed.bundles]
    return BundlePrediction(session.session_id, bundles, text, parsed.reason, details)


class _Shared:
    """Holds the shared LLM outside the module tree, so ``model.train()`` / ``.to()`` / ``requires_grad_``
    on this model never reach an object other models use too."""

    def __init__(self, loaded: LoadedLLM) -> None:
        self.loaded = loaded


class BundleLLM(BundleGenerator):
    """The student LLM as a RecBole model: prompt → generation backend → parsed bundles."""

    #: False: the shared in-process LLM, never modified. A subclass that trains loads its own copy.
    owns_llm = False
    #: Why this model needs the student's weights in this process whatever ``generation_backend``
    #: says (``None``: any backend serves it; a backend of another process is refused otherwise).
    in_process_only: ClassVar[str | None] = None

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        self.prompt_mode = check_prompt_mode(config)
        self.style = prompt_style(config)
        self.strategy = self._make_strategy(config)
        # Created (its settings checked) before any weights load; opened at the first generation.
        self.backend: GenerationBackend = self._make_backend(config)
        self._backend_open = False
        self.run_info = {"generation_backend": self.backend.describe()}
        self.loaded_llm: _Shared | None = None
        self.tokenizer: Any = None
        self.context_tokens: int | None = None
        if self.backend.in_process:
            loaded = self._load(config)
            self.run_info.update({
                "source": loaded.source,
                "path": str(loaded.path),
                "device": str(loaded.device),
                "dtype": str(loaded.dtype).removeprefix("torch."),
                "load_seconds": round(loaded.load_seconds, 2),
                # The kernel transformers actually chose (its default when attn_implementation is ~).
                "attn_implementation": getattr(loaded.model.config, "_attn_implementation", None),
            })
            self.tokenizer = loaded.tokenizer
            self.context_tokens = int(getattr(loaded.model.config, "max_position_embeddings", 0) or 0) or None
        elif config["max_prompt_tokens"] is not None:
            # The budget counts the student's tokens here; silently ignoring it would change the prompts.
            raise SettingsError(f"max_prompt_tokens counts the student's tokens in this process; generation_backend: "
                                f"{self.backend.name} loads no tokenizer here: remove max_prompt_tokens")
        self.run_info.update({"prompt_version": self.style.version, "max_prompt_tokens": config["max_prompt_tokens"]})
        if self.strategy is not None:
            self.run_info["adaptation"] = self.strategy.name
        # Ranges checked by BundleConfig (properties/ranges.yaml): K >= 1, threshold in (0, 1].
        self.vote_samples, self.vote_threshold = int(config["vote_samples"]), float(config["vote_threshold"])
        #: The decoding settings, this model's own: the backend reads them at every call.
        self.generation = GenerationConfig(
            max_new_tokens=config["max_new_tokens"],
            batch_size=config["generation_batch_size"],
            # K voted answers are K samples (at `temperature`) of one prompt sharing its prefill.
            do_sample=bool(config["do_sample"]) or self.vote_samples > 1,
            temperature=config["temperature"],
            top_p=config["top_p"],
            num_return_sequences=self.vote_samples,
            seed=config["seed"],
            max_prompt_tokens=self._prompt_limit(config),
            stop_strings=tuple(config["stop_strings"] or ()),
        )
        self.examples: NearestSessions | None = None

    # ------------------------------------------------------------------ the LLM

    def _prompt_limit(self, config: Any) -> int | None:
        """``max_prompt_tokens``, never more than the model's context leaves after the answer: a
        longer prompt is cut from the left (warned and counted) instead of failing deep inside
        the model."""
        limit = config["max_prompt_tokens"]
        if self.context_tokens is None:
            return limit
        room = self.context_tokens - config["max_new_tokens"]
        if room < 1:
            raise SettingsError(f"max_new_tokens={config['max_new_tokens']} leaves no room for a prompt in the "
                                f"model's context of {self.context_tokens} tokens; lower max_new_tokens")
        return room if limit is None else min(limit, room)

    def _load(self, config: Any) -> LoadedLLM:
        # "auto" follows RecBole's own device choice, so `use_gpu: False` keeps the LLM on the CPU too.
        device = str(config["device"]) if config["llm_device"] == "auto" else config["llm_device"]
        # str(): `llm_model: 5` in YAML is a (missing) path, not a programming error.
        loaded = load_llm(str(config["llm_model"]), device=device, dtype=config["llm_dtype"],
                          use_cache=not self.owns_llm, attn_implementation=config["attn_implementation"],
                          load_in_4bit=bool(config["load_in_4bit"]))
        self.loaded_llm = _Shared(loaded)
        return loaded

    @property
    def student(self) -> Any:
        """The causal LM that generates (the shared one here; the adapted copy in a subclass);
        ``None`` when a backend of another process generates."""
        return self.loaded_llm.loaded.model if self.loaded_llm is not None else None

    @property
    def device(self) -> Any:
        """Where the LLM lives (the runner moves the model there, not to RecBole's default);
        ``None`` without one in this process."""
        return self.loaded_llm.loaded.device if self.loaded_llm is not None else None

    # ------------------------------------------------------------------ the generation backend

    def _make_backend(self, config: Any) -> GenerationBackend:
        """The backend ``generation_backend`` names, its settings (the YAML key of its name) checked."""
        name = str(config["generation_backend"])
        try:
            cls = config.host.get("backend", name)
        except PluginError as exc:
            raise SettingsError(f"generation_backend: {exc}") from None
        check_in_process(cls, type(self).__name__, self.in_process_only)
        return config.host.create("backend", name, config)

    def generation_context(self) -> GenerationContext:
        """What the backend generates with: these decoding settings, the student in this process
        (for an in-process backend) and the folder beside the run that outlives a killed one."""
        local = self.backend.in_process
        return GenerationContext(self.generation, self.student if local else None, self.tokenizer if local else None,
                                 state_dir=self.state_dir())

    def state_dir(self) -> Path:
        """``<run folder>.answers`` beside the run's output folder (``run_folder``, set by the
        runner); outside a run, ``answers`` in RecBole's ``checkpoint_dir``."""
        if self.run_folder is not None:
            return self.run_folder.with_name(self.run_folder.name + STATE_SUFFIX)
        return Path(str(self.config["checkpoint_dir"])) / STATE_SUFFIX.lstrip(".")

    def restart_backend(self) -> None:
        """Close the backend; the next generation opens it again with the current student (after
        the student was replaced, e.g. by its merged copy)."""
        self.backend.close()
        self._backend_open = False

    def generate_texts(self, prompts: Sequence[Sequence[dict[str, str]]], desc: str | None = None) -> list[list[str]]:
        """Per prompt, ``num_return_sequences`` answers from the backend (opened on first use)."""
        if not self._backend_open:
            self.backend.open(self.generation_context())
            self._backend_open = True
        # A bar per run (sessions done, rate, ETA) on a terminal; `show_progress: True` or
        # BUNDLELLM_PROGRESS=1 asks for it elsewhere too.
        return self.backend.generate(prompts, progress=self.config["show_progress"] or None,
                                     desc=desc or f"{type(self).__name__} sessions")

    # ------------------------------------------------------------------ adaptation

    def _make_strategy(self, config: Any) -> AdaptationStrategy | None:
        name = config["adaptation"]
        if name is None:
            return None
        strategy: AdaptationStrategy = config.host.create("strategy", str(name), config)
        if strategy.fine_tunes and not self.owns_llm:
            raise SettingsError(f"adaptation '{name}' fine-tunes the student: run it with `model: BundleSFT`")
        if not strategy.fine_tunes and self.owns_llm:
            raise SettingsError(f"adaptation '{name}' does not train: run it with `model: BundleLLM`")
        return strategy

    def load_knowledge(self, train_sessions: Sequence[Session]) -> Any:
        """The knowledge set the student uses (``knowledge_use``), or ``None`` for raw data."""
        if not self.config["knowledge_use"]:
            return None
        from recbole_bundlellm.adaptation.knowledge_source import load_student_knowledge

        return load_student_knowledge(self.config, train_sessions)

    def measure(self, session: Session, view: StudentView) -> int:
        """Tokens of the whole prompt of ``session`` seen through ``view``."""
        return len(prompt_token_ids(self.tokenizer, view_messages(session, view, self.style)))

    def embed(self, texts: Sequence[str]) -> Any:
        """Mean-pooled last hidden states of the student (retrieval by the student's own embeddings)."""
        import torch

        if self.student is None:
            return None

        rows = []
        with torch.inference_mode():
            for start in range(0, len(texts), 16):
                batch = self.tokenizer(list(texts[start:start + 16]), return_tensors="pt", padding=True,
                                       truncation=True, max_length=256)
                batch = {k: v.to(self.device) for k, v in batch.items()}
                hidden = self.student(**batch, output_hidden_states=True).hidden_states[-1]
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                rows.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu())
        return torch.cat(rows).numpy() if rows else None

    def fit_bundles(self, train_sessions: Sequence[Session]) -> None:
        if self.strategy is not None:
            knowledge = self.load_knowledge(train_sessions)
            # Without the student in this process there is nothing to measure or embed with.
            local = self.tokenizer is not None
            context = AdaptationContext(train_sessions, knowledge, measure=self.measure if local else None,
                                        max_prompt_tokens=self.generation.max_prompt_tokens, seed=self.config["seed"],
                                        embed=self.embed if local else None, domain=str(self.config["dataset"]))
            self.strategy.prepare(context)
            if knowledge is not None:
                self.run_info["knowledge"] = {"counts": knowledge.counts(), "domains": knowledge.domains}
                self.run_info["knowledge_set_hash"] = hashlib.sha256(
                    json.dumps(knowledge.to_json(), sort_keys=True).encode()).hexdigest()
            for note in context.notes:
                logger.info("%s: %s", self.strategy.name, note)
        elif self.prompt_mode == "one_shot":
            self.examples = NearestSessions(train_sessions)

    def views(self, sessions: Sequence[Session], *, training: bool) -> list[StudentView]:
        """What the student sees for each session (through the strategy, or zero-/one-shot)."""
        if self.strategy is not None:
            return self.strategy.views(sessions, training=training)
        return shot_views(sessions, self.prompt_mode, self.examples)

    def prompts(self, sessions: Sequence[Session], views: Sequence[StudentView]) -> list[list[dict[str, str]]]:
        return session_prompts(sessions, views, self.style, adapted=self.strategy is not None)

    def note_prompts(self, sessions: Sequence[Session], views: Sequence[StudentView],
                     prompts: Sequence[Sequence[dict[str, str]]]) -> None:
        """The ``prompts`` about to be answered show ``sessions`` through ``views`` (a model that
        needs to know what a prompt shows, as RouteDK's session features for its router, notes
        it); nothing by default."""

    # ------------------------------------------------------------------ generation

    def answers(self, prompts: Sequence[Sequence[dict[str, str]]]) -> list[list[str]]:
        """Per prompt, its answer texts: one, or the ``vote_samples`` samples to vote over."""
        return self.generate_texts(prompts)

    def generate_bundles(self, sessions: Sequence[Session]) -> list[BundlePrediction]:
        views = self.views(sessions, training=False)
        prompts = self.prompts(sessions, views)
        self.note_prompts(sessions, views, prompts)
        texts = self.answers(prompts)
        # metrics.json carries these (truncated_prompts above all: cut prompts change the scores).
        self.run_info["generation"] = {k: round(v, 3) if isinstance(v, float) else v
                                       for k, v in self.backend.stats.items()}
        self.run_info["generation_backend"] = self.backend.describe()
        if self.strategy is not None:
            self.run_info["views"] = dict(self.strategy.stats)
        prefix = self.style.answer_prefix
        out = []
        for session, view, answers in zip(sessions, views, texts):
            if len(answers) > 1:
                prediction = voted_prediction(session, [prefix + a for a in answers], self.style, self.vote_threshold)
            else:
                prediction = parse_prediction(session, prefix + answers[0], self.style)
            out.append(with_view_details(prediction, view))
        return out
