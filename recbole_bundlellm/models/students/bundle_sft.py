"""BundleSFT: the student fine-tuned with LoRA on the training sessions (and their knowledge).

Trained by :class:`~recbole_bundlellm.training.sft_trainer.SFTTrainer`: the model builds the examples
(the strategy's view of each training session as the prompt, the ground truth, after the
session's reasoning where thoughts are used, as the target) and computes the loss on the target
tokens; the trainer owns the loop, checkpoints and validation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from recbole_bundlellm.llm.batches import SFTExample, answer_loss, class_balanced_weights, collate, cut_to_length
from recbole_bundlellm.llm.lora import (
    BaseModelId,
    LoraSettings,
    adapted_layers,
    attach_lora,
    check_base,
    count_parameters,
    load_trainable_state,
    save_adapter,
    target_modules_setting,
)
from recbole_bundlellm.adaptation.strategy import StudentView, fit_budget
from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.generation.chat import prompt_token_ids
from recbole_bundlellm.generation.prompt import NO_BUNDLE, TAG_LABELS, answer_text
from recbole_bundlellm.llm import LoadedLLM, model_content_hash
from recbole_bundlellm.llm.scaling import enable_gradient_checkpointing, prepare_four_bit_for_training
from recbole_bundlellm.models.students.bundlellm import BundleLLM
from recbole_bundlellm.settings import SettingsError

logger = logging.getLogger(__name__)
#: One product's label in a tags answer (``3:A``, ``4:-``): group 2 is the label.
_TAG = re.compile(r"(\d+):([A-Z]|" + re.escape(NO_BUNDLE) + r")")
LABEL_WEIGHTINGS = ("none", "balanced")

#: Settings that change how the adapter is trained or which epoch is kept (the examples and the
#: validation prompts are hashed themselves, so what the student sees needs no key here).
TRAINING_KEYS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules", "full_finetune", "epochs",
                 "learner", "learning_rate", "weight_decay", "clip_grad_norm", "train_batch_size",
                 "gradient_accumulation_steps", "lr_schedule", "warmup_ratio", "eval_step", "stopping_step",
                 "valid_metric", "seed", "max_new_tokens", "stop_strings", "do_sample", "temperature", "top_p",
                 "max_prompt_tokens")
#: Training settings added later: in the fingerprint only when set, so older adapters stay reusable.
LATER_TRAINING_KEYS = ("lora_layers",)
#: Added later too, in the fingerprint only when on: 4-bit base weights train another adapter.
#: Not fingerprinted at all, like llm_device and llm_dtype: gradient_checkpointing (the same
#: computation, recomputed; the same loss) and attn_implementation (the same attention, another
#: kernel: differences at rounding level; an adapter trained with flash attention on a GPU must
#: stay reusable where only sdpa or eager exists).
LATER_TRAINING_FLAGS = ("load_in_4bit",)
FINGERPRINT_VERSION = "sft-v1"
#: valid_metric (RecBole's lower-cased class name) -> its key in compute_bundle_metrics' summary.
METRIC_SUMMARY_KEYS = {"exactf1": "exact_f1", "bestjaccard": "best_jaccard", "exactprecision": "exact_precision",
                       "exactrecall": "exact_recall", "distinctrecall": "distinct_recall"}


class BundleSFT(BundleLLM):
    """The student LLM with trainable LoRA adapters (or every weight, ``full_finetune``)."""

    owns_llm = True
    in_process_only: ClassVar[str | None] = ("fine-tunes the student in this process and generates with the "
                                             "weights it trains")

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        loaded = self.loaded_llm.loaded
        self.base = BaseModelId(str(loaded.path), model_content_hash(loaded.path))
        if config["answer_order"] not in ("session", "shuffled"):
            raise SettingsError(f"answer_order '{config['answer_order']}' is not one of session, shuffled")
        limit = config["max_seq_tokens"]
        if limit is None and self.context_tokens is not None:  # ~: as long as the model reads
            config["max_seq_tokens"] = limit = self.context_tokens
        if self.context_tokens is not None and limit > self.context_tokens:
            raise SettingsError(f"max_seq_tokens={limit} exceeds the model's context of {self.context_tokens} tokens; "
                                f"set max_seq_tokens to {self.context_tokens} or less")
        if config["label_weighting"] not in LABEL_WEIGHTINGS:
            raise SettingsError(f"label_weighting '{config['label_weighting']}' is not one of {', '.join(LABEL_WEIGHTINGS)}")
        if config["label_weighting"] != "none" and config["prompt_format"] != "tags":
            raise SettingsError("label_weighting weighs the labels of a tags answer; set prompt_format: tags "
                                "or label_weighting: none")
        self.full_finetune = bool(config["full_finetune"])
        if config["load_in_4bit"]:
            if self.full_finetune:
                raise SettingsError("load_in_4bit (QLoRA) trains adapters on frozen 4-bit weights; "
                                    "full_finetune cannot train them: set one of the two to False")
            prepare_four_bit_for_training(loaded.model)
        self.llm = self.trainable_model(loaded.model, config)  # a submodule: RecBole's .to() and train() reach it
        if config["gradient_checkpointing"]:
            enable_gradient_checkpointing(self.llm)
        self.run_info["parameters"] = count_parameters(self.llm)
        self.run_info["base_model"] = {"path": self.base.path, "content_hash": self.base.content_hash}
        self.raw_training_sessions = 0

    def trainable_model(self, model: Any, config: Any) -> Any:
        """This model's own copy of the base LLM made trainable: LoRA adapters attached, or every
        weight with ``full_finetune`` (a subclass that trains something else overrides this)."""
        if self.full_finetune:
            return model.requires_grad_(True)
        self.lora = LoraSettings(config["lora_rank"], config["lora_alpha"], config["lora_dropout"],
                                 target_modules_setting(config["lora_target_modules"]),
                                 adapted_layers(config["lora_layers"], self.read_layer(model)))
        return attach_lora(model, self.lora)

    def read_layer(self, model: Any) -> int:
        """The 1-based transformer block whose output the model reads (the last one: the LM head
        reads it); ``lora_layers`` adapts the blocks just below it."""
        return int(model.config.num_hidden_layers)

    def _load(self, config: Any) -> LoadedLLM:
        loaded = super()._load(config)
        if str(loaded.dtype) == "torch.float16":
            # fp16 weights overflow in training without a loss scaler; bf16 or fp32 train safely.
            raise SettingsError("llm_dtype float16 cannot be fine-tuned safely; use bfloat16 (GPU) or float32")
        return loaded

    @property
    def student(self) -> Any:
        llm = getattr(self, "llm", None)  # set once the adapters are attached, after BundleLLM's init
        return llm if llm is not None else self.loaded_llm.loaded.model

    # ------------------------------------------------------------------ training data

    def training_examples(self, sessions: Sequence[Session]) -> list[SFTExample]:
        """One example per labelled session: the strategy's view as prompt, the truth as target."""
        labelled = [s for s in sessions if s.bundles]
        views = self.views(labelled, training=True)
        eos = self.tokenizer.eos_token or ""
        limit = self.config["max_seq_tokens"]
        prompts, targets, classes, shown, trimmed = [], [], [], [], 0
        for session, view in zip(labelled, views):
            answer = answer_text(session, self.style, view.reasoning, self.answer_order(session))
            target_ids, target_classes = self._target(answer, eos)
            prompt_ids = self._prompt_ids(session, view)
            if limit is not None and len(prompt_ids) + len(target_ids) > limit and view.items:
                # The knowledge block gives way first (least relevant item first, as the prompt
                # budget does at inference): cutting the prompt from the left would drop the
                # instruction, and the model would train on prompts it never sees at test.
                view, dropped = fit_budget(session, view, lambda s, v: len(self._prompt_ids(s, v)),
                                           limit - len(target_ids))
                prompt_ids, trimmed = self._prompt_ids(session, view), trimmed + dropped
            prompts.append(prompt_ids)
            targets.append(target_ids)
            classes.append(target_classes)
            shown.append(view)
        weights = (class_balanced_weights(classes, float(self.config["label_weight_power"]))
                   if self.config["label_weighting"] == "balanced" else [None] * len(targets))
        examples, cut = [], 0
        for session, view, prompt, target, target_weights in zip(labelled, shown, prompts, targets, weights):
            example, was_cut = cut_to_length(SFTExample(session.session_id, tuple(prompt), tuple(target),
                                                        target_weights=target_weights), self.config["max_seq_tokens"])
            self.note_prompt_ids(session, view, example.prompt_ids)
            examples.append(example)
            cut += was_cut
        self.raw_training_sessions = sum(v.is_raw for v in views)
        self.run_info["training_data"] = {
            "sessions": len(examples), "raw_sessions": self.raw_training_sessions,
            "with_reasoning": sum(v.reasoning is not None for v in views), "cut_to_max_seq_tokens": cut,
            "items_dropped_for_max_seq_tokens": trimmed,
            "tokens": sum(len(e) for e in examples), "target_tokens": sum(len(e.target_ids) for e in examples),
        }
        if self.strategy is not None and self.config["knowledge_use"]:
            # Their knowledge record failed or their session was not sampled.
            logger.info("%d of %d training sessions have no knowledge in their example and train on the raw session",
                        self.raw_training_sessions, len(examples))
        if trimmed:
            logger.info("%d knowledge items (least relevant first) left out of training prompts to fit "
                        "max_seq_tokens=%s", trimmed, limit)
        if cut:
            logger.warning("%d training examples were longer than max_seq_tokens=%s and lost the start of their "
                           "prompt", cut, self.config["max_seq_tokens"])
        return examples

    def note_prompt_ids(self, session: Session, view: StudentView, prompt_ids: Sequence[int]) -> None:
        """``prompt_ids``, the tokens the student reads, show ``session`` through ``view`` (called
        for each training prompt; a model that needs to know what a prompt shows, as RouteDK's
        session features for its router, notes it); nothing by default."""

    def _prompt_ids(self, session: Session, view: StudentView) -> list[int]:
        """The token ids of the prompt ``session`` is trained on, seen through ``view``."""
        return prompt_token_ids(self.tokenizer, self.prompts([session], [view])[0])

    def _target(self, answer: str, eos: str) -> tuple[list[int], list[str | None]]:
        """The target's token ids and, with ``label_weighting``, each token's label class in a
        tags answer: ``-`` (no bundle), ``A`` (the first bundle) or ``new`` (a later one)."""
        if self.config["label_weighting"] == "none":
            return self.tokenizer(answer + eos, add_special_tokens=False)["input_ids"], []
        encoded = self.tokenizer(answer + eos, add_special_tokens=False, return_offsets_mapping=True)
        labels = {m.start(2): m.group(2) for m in _TAG.finditer(answer, answer.rfind("\n") + 1)}
        classes: list[str | None] = []
        for start, end in encoded["offset_mapping"]:
            label = next((labels[p] for p in range(start, end) if p in labels), None)
            classes.append(None if label is None else label if label in (NO_BUNDLE, TAG_LABELS[0]) else "new")
        return encoded["input_ids"], classes

    def answer_order(self, session: Session) -> list[int] | None:
        """The order a training target lists the products in (tags format): the session's, or a
        permutation seeded by (seed, session id) with ``answer_order: shuffled``."""
        if self.style.format != "tags" or self.config["answer_order"] != "shuffled":
            return None
        order = list(range(len(session)))
        random.Random(f"bundlellm-order:{self.config['seed']}:{session.session_id}").shuffle(order)
        return order

    def collate(self, examples: Sequence[SFTExample]) -> dict[str, torch.Tensor]:
        """One training batch of ``examples`` (right-padded prompt + target, loss on the target)."""
        return collate(examples, self.pad_id())

    def calculate_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy on the target tokens of a collated batch, and their number."""
        return answer_loss(self.llm, batch)

    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id

    def training_settings(self) -> dict[str, Any]:
        """The settings an adapter's training depends on (fingerprinted, and recorded with it)."""
        settings = {k: self.config[k] for k in TRAINING_KEYS}
        settings.update({k: self.config[k] for k in LATER_TRAINING_KEYS if self.config[k] is not None})
        settings.update({k: True for k in LATER_TRAINING_FLAGS if self.config[k]})
        return settings

    #: Changes when what a fingerprint covers changes (a subclass trains something else).
    fingerprint_version = FINGERPRINT_VERSION

    def fingerprint_settings(self) -> dict[str, Any]:
        """The settings part of the fingerprint (a subclass adds its own keys)."""
        return self.training_settings()

    def example_fingerprint(self, example: Any) -> list[bytes]:
        """What one training example adds to the fingerprint."""
        parts = [json.dumps([example.session_id, example.prompt_ids, example.target_ids, example.weight]).encode()]
        if example.target_weights is not None:  # absent from older fingerprints: their adapters stay reusable
            parts.append(json.dumps(example.target_weights).encode())
        return parts

    def fingerprint(self, examples: Sequence[Any], valid_sessions: Sequence[Session]) -> str:
        """What the trained adapter depends on: the base weights, the training examples (token ids:
        data, knowledge and prompt format all show there), the validation prompts and truth (they
        pick the best epoch) and the training settings."""
        digest = hashlib.sha256()
        digest.update(json.dumps([self.fingerprint_version, self.base.content_hash, self.fingerprint_settings()],
                                 sort_keys=True, default=str).encode())
        for e in examples:
            for part in self.example_fingerprint(e):
                digest.update(part)
        views = self.views(valid_sessions, training=False)
        for session, prompt in zip(valid_sessions, self.prompts(valid_sessions, views)):
            digest.update(json.dumps([prompt, sorted(sorted(b) for b in session.bundles)]).encode())
        return digest.hexdigest()

    # ------------------------------------------------------------------ decoding calibration

    def label_tokens(self) -> tuple[int | None, list[int]]:
        """The tags format's "no bundle" label token (``:-`` where the tokenizer has it) and its
        new-bundle letters B, C, ... (``A`` continues the first bundle); ``None`` / ``[]`` where
        the tokenizer has no such single tokens."""
        unknown = self.tokenizer.unk_token_id

        def single(token: str) -> int | None:
            ids = self.tokenizer(token, add_special_tokens=False)["input_ids"]
            return ids[0] if len(ids) == 1 and ids[0] != unknown else None

        letters = [single(letter) for letter in TAG_LABELS[1:]]
        return single(":" + NO_BUNDLE), [t for t in letters if t is not None]

    def tune(self, valid_sessions: Sequence[Session]) -> dict[str, Any] | None:
        """Calibrate the tags decoding on the valid sessions: a bias on the "no bundle" label and
        one on the new-bundle letters, chosen from ``label_bias_grid`` by ``valid_metric``
        (greedy decoding of a small student over-predicts one bundle of everything)."""
        grid = self.config["label_bias_grid"]
        if self.style.format != "tags" or not grid or not valid_sessions:
            return None
        from recbole_bundlellm.evaluation.bundle_metrics import compute_bundle_metrics
        from recbole_bundlellm.models.base import without_labels

        none_id, letters = self.label_tokens()
        metric = METRIC_SUMMARY_KEYS.get(str(self.config["valid_metric"]).lower(), "exact_f1")
        hidden = without_labels(valid_sessions)
        truth = [list(s.bundles) for s in valid_sessions]
        items = [frozenset(s.item_ids) for s in valid_sessions]
        scores: dict[tuple[float, float], float] = {}
        for none_bias in sorted({float(b) for b in grid}, key=abs):
            for split_bias in sorted({float(b) for b in grid}, key=abs):
                bias = {t: split_bias for t in letters}
                if none_id is not None:
                    bias[none_id] = none_bias
                self.generation.logit_bias = bias or None
                pred = [None if p.failed else [frozenset(b) for b in p.bundles] for p in self.generate_bundles(hidden)]
                scores[(none_bias, split_bias)] = compute_bundle_metrics(pred, truth, items)[metric]
        best = max(scores, key=lambda k: (scores[k], -abs(k[0]) - abs(k[1])))  # ties: the smaller bias
        bias = {t: best[1] for t in letters}
        if none_id is not None:
            bias[none_id] = best[0]
        self.generation.logit_bias = bias or None
        chosen = {"none_bias": best[0], "new_bundle_bias": best[1], metric: round(scores[best], 4),
                  "unbiased": round(scores[(0.0, 0.0)], 4) if (0.0, 0.0) in scores else None,
                  "grid": {f"{k[0]:g},{k[1]:g}": round(v, 4) for k, v in scores.items()}}
        self.run_info["decoding"] = chosen
        self.backend.reset_stats()
        return chosen

    # ------------------------------------------------------------------ adapters

    def adapter_record(self) -> dict[str, Any]:
        """What the saved adapter records of its training besides base and fingerprint (the expert
        store lists experts by it): knowledge types, strategy, run name, training settings."""
        return {"knowledge_use": list(self.config["knowledge_use"] or []),
                "adaptation": self.strategy.name if self.strategy is not None else None,
                "run_name": self.config["run_name"], "settings": self.training_settings()}

    def trained_state(self) -> dict[str, torch.Tensor]:
        from recbole_bundlellm.llm.lora import trainable_state

        return trainable_state(self.llm)

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        load_trainable_state(self.llm, tensors)

    def save_adapter(self, folder: Path, fingerprint: str, info: dict[str, Any]) -> Path:
        """The trained adapter as a peft folder (full weights as safetensors for ``full_finetune``)."""
        if self.full_finetune:
            folder.mkdir(parents=True, exist_ok=True)
            self.llm.save_pretrained(folder, safe_serialization=True)
            from recbole_bundlellm.llm.lora import ADAPTER_INFO

            (folder / ADAPTER_INFO).write_text(json.dumps({"base_model": vars(self.base), "fingerprint": fingerprint,
                                                           "full_finetune": True, **info}, indent=2))
            return folder
        return save_adapter(self.llm, folder, self.base, fingerprint, info)

    def load_adapter(self, folder: Path) -> dict[str, Any]:
        """Load a saved adapter's weights into this model's adapter (base checked first)."""
        info = check_base(folder, self.base)
        if self.full_finetune or info.get("full_finetune"):
            raise SettingsError(f"{folder} holds fully fine-tuned weights: give it as llm_model instead")
        from peft.utils import set_peft_model_state_dict

        from recbole_bundlellm.llm.checkpoint import read_tensors

        weights = read_tensors(Path(folder) / "adapter_model.safetensors", "delete the adapter folder to train again")
        result = set_peft_model_state_dict(self.llm, weights)
        if getattr(result, "unexpected_keys", None):
            raise SettingsError(f"{folder} does not fit this model's LoRA settings "
                                f"(unexpected {list(result.unexpected_keys)[:3]}); use the settings it was trained with")
        return info
