"""PairSFT: the student LLM scores every product pair of a session from its own hidden states.

A generated answer is one greedy string, so a small student gives every product the label that
is most often right (one bundle of everything); nothing in it can be calibrated. PairSFT reads
the same prompt (the session's products, with the adaptation strategy's knowledge and examples)
in **one forward pass** and takes, for each product, the last hidden state of its line in the
prompt. A small pair head turns two products' states into a "same bundle?" logit; it trains
with the LoRA adapters on the pairs' labels (binary cross-entropy). At inference the pair
probabilities become bundles through Pairwise's grouping, with grouping, threshold and fallback
tuned on valid (:func:`~recbole_bundlellm.models.baselines.pairwise.tune_grouping`).

The structure comes from the LLM alone (its hidden states over the prompt); no other model's
scores are mixed in. Training and inference need no generation: one pass per session.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from recbole_bundlellm.llm.lora import load_trainable_state, save_adapter, trainable_state
from recbole_bundlellm.adaptation.strategy import StudentView, fit_budget
from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.fusion.representation import base_model_only, hidden_states, routing_block
from recbole_bundlellm.generation.chat import render_chat
from recbole_bundlellm.models.base import BundlePrediction
from recbole_bundlellm.models.students.bundle_sft import BundleSFT
from recbole_bundlellm.models.students.bundlellm import with_view_details
from recbole_bundlellm.models.baselines.pairwise import (Grouping, grouped_prediction, pair_labels, session_pairs,
                                                        tune_grouping)
from recbole_bundlellm.progress import progress_bar
from recbole_bundlellm.settings import SettingsError, check_row

FINGERPRINT_VERSION = "pair-sft-v3"
HEAD_FILE = "pair_head.safetensors"
PAIR_KEYS = ("pair_head_dim", "pair_positive_weight", "pair_layer", "pair_pooling", "pair_probe_steps",
             "pair_probe_learning_rate", "pair_probe_weight_decay", "pair_head_dropout")
#: Sessions per step of the head's probe fit on the frozen model's states.
PROBE_BATCH_SESSIONS = 32
#: Training sessions whose products set the head's standardisation (the first by session id).
CALIBRATION_SESSIONS = 64


@dataclass(frozen=True)
class PairExample:
    """One training session: its prompt's token ids, the first and last token of each product's
    line, and the same-bundle label of each pair (``session_pairs`` order)."""

    session_id: str
    prompt_ids: tuple[int, ...]
    product_spans: tuple[tuple[int, int], ...]
    pair_labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.prompt_ids)


class PairHead(torch.nn.Module):
    """A symmetric "same bundle?" scorer over two products' hidden states.

    A middle block's residual stream has a few dimensions hundreds of times larger than the rest
    (they carry position and "attention sink" signals, not the product). Normalising each state
    over its own dimensions (a layer norm) keeps them dominant, so every product looks alike and
    the loss stays at its prior. The head therefore standardises each dimension with statistics
    measured on training products (:meth:`calibrate`, kept as buffers and saved with the head),
    then compares unit-length states: the cosine of two standardised line means at block 16
    already ranks Electronic's valid pairs at AUC 0.65 before any training, and a logistic
    regression on them reaches 0.70 (``benchmarks/pair_signal/probe.py``)."""

    def __init__(self, hidden: int, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout_p = dropout  # on the standardised states, while training: the head is small data's
        self.register_buffer("center", torch.zeros(hidden))
        self.register_buffer("scale", torch.ones(hidden))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))
        self.project = torch.nn.Linear(hidden, dim)
        self.score = torch.nn.Sequential(torch.nn.Linear(3 * dim + 1, dim), torch.nn.GELU(), torch.nn.Linear(dim, 1))

    @torch.no_grad()
    def calibrate(self, states: torch.Tensor) -> None:
        """Per-dimension mean and spread of ``states`` (products x hidden) from training sessions."""
        states = states.float()
        self.center.copy_(states.mean(dim=0))
        self.scale.copy_(states.std(dim=0, unbiased=False).clamp(min=1e-4))
        self.calibrated.fill_(True)

    def forward(self, states: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Logits of the pairs (``first[k]``, ``second[k]``) of ``states`` (products x hidden)."""
        z = torch.nn.functional.normalize((states.float() - self.center) / self.scale, dim=-1)
        z = torch.nn.functional.dropout(z, self.dropout_p, self.training)
        cosine = (z[first] * z[second]).sum(-1, keepdim=True)
        u = self.project(z * z.shape[-1] ** 0.5)  # unit vectors scaled back to entries of order one
        a, b = u[first], u[second]
        # Symmetric in (a, b): a pair's score cannot depend on which product came first.
        return self.score(torch.cat([a * b, a + b, (a - b).abs(), cosine], dim=-1)).squeeze(-1)


def product_line_spans(text: str, offsets: Sequence[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    """The first and last token index of each of the ``n`` product lines (``1. ...``) of the last
    product list in ``text``, the rendered prompt (``offsets``: each token's character span)."""
    start = text.rfind("Products:\n")
    if start < 0:
        raise ValueError("the prompt has no product list")
    lines, cursor = [], start + len("Products:\n")
    for i in range(n):
        if not text.startswith(f"{i + 1}. ", cursor):
            raise ValueError(f"product line {i + 1} not found in the prompt")
        line_end = text.find("\n", cursor)
        line_end = len(text) if line_end < 0 else line_end
        lines.append((cursor, line_end - 1))  # the line's first and last character
        cursor = line_end + 1

    def token_at(char: int) -> int:
        return next(t for t, (a, b) in enumerate(offsets) if a <= char < b or a > char)

    return [(token_at(first), token_at(last)) for first, last in lines]


class PairSFT(BundleSFT):
    """The student LLM with LoRA adapters and a pair head, trained on same-bundle pair labels."""

    in_process_only: ClassVar[str | None] = "reads the student's hidden states in this process (it generates no text)"

    def __init__(self, config: Any, dataset: Any) -> None:
        if config["prompt_format"] != "tags":
            raise SettingsError("PairSFT reads each product's line of the tags prompt; set prompt_format: tags")
        check_row("pair_pooling", config["pair_pooling"])  # its ranges.yaml row, for a plain mapping
        super().__init__(config, dataset)
        # The pass stops at block pair_layer: the blocks above it would cost time and add nothing.
        self.pair_block = routing_block(self.llm, int(config["pair_layer"]), "pair_layer")
        self.pair_head = self.build_pair_head(config).to(self.loaded_llm.loaded.device)
        self.grouping = Grouping(config["pairwise_grouping"], float(config["pairwise_threshold"]),
                                 config["pairwise_fallback"])
        self.calibration_examples: list[PairExample] = []  # set by training_examples
        self.run_info["parameters"]["trainable"] += sum(p.numel() for p in self.pair_head.parameters())
        self.run_info["parameters"]["total"] += sum(p.numel() for p in self.pair_head.parameters())

    def build_pair_head(self, config: Any) -> torch.nn.Module:
        """The head scoring the pairs (trained with the adapters)."""
        return PairHead(int(self.llm.config.hidden_size), int(config["pair_head_dim"]), float(config["pair_head_dropout"]))

    def read_layer(self, model: Any) -> int:
        layer = int(self.config["pair_layer"])
        routing_block(model, layer, "pair_layer")  # a block the model has, or a clear error
        return int(model.config.num_hidden_layers) if layer == -1 else layer

    # ------------------------------------------------------------------ prompts

    def _encode(self, session: Session, view: StudentView) -> tuple[list[int], list[tuple[int, int]]]:
        """The prompt's token ids and the first and last token of each product's line."""
        text = render_chat(self.tokenizer, self.prompts([session], [view])[0])
        templated = bool(getattr(self.tokenizer, "chat_template", None))
        encoded = self.tokenizer(text, add_special_tokens=not templated, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        return ids, product_line_spans(text, encoded["offset_mapping"], len(session))

    def training_examples(self, sessions: Sequence[Session]) -> list[PairExample]:  # type: ignore[override]
        """One example per labelled session of two or more products: its prompt and pair labels
        (with ``pair_joint_raw`` a second one on its raw prompt where its view holds knowledge)."""
        labelled = [s for s in sessions if s.bundles and len(s) >= 2]
        views = self.views(labelled, training=True)
        raw_too = [s for s, v in zip(labelled, views) if not v.is_raw] if self.config["pair_joint_raw"] else []
        labelled, views = labelled + raw_too, views + [StudentView()] * len(raw_too)  # naive joint training
        limit = self.config["max_seq_tokens"]
        examples, trimmed, cut = [], 0, 0
        for session, view in zip(labelled, views):
            ids, spans = self._encode(session, view)
            if limit is not None and len(ids) > limit and view.items:
                view, dropped = fit_budget(session, view, lambda s, v: len(self._encode(s, v)[0]), limit)
                ids, spans = self._encode(session, view)
                trimmed += dropped
            if limit is not None and len(ids) > limit:  # still too long: the start of the prompt goes
                shift = len(ids) - limit
                ids, spans, cut = ids[shift:], [(max(0, a - shift), max(0, b - shift)) for a, b in spans], cut + 1
            labels = tuple(int(x) for x in pair_labels(session))
            self.note_prompt_ids(session, view, ids)
            examples.append(PairExample(session.session_id, tuple(ids), tuple(spans), labels))
        self.raw_training_sessions = sum(v.is_raw for v in views)
        self.calibration_examples = examples
        positives = sum(sum(e.pair_labels) for e in examples)
        pairs = sum(len(e.pair_labels) for e in examples)
        self.run_info["training_data"] = {
            "sessions": len(examples), "raw_sessions": self.raw_training_sessions, "raw_copies": len(raw_too),
            "items_dropped_for_max_seq_tokens": trimmed, "cut_to_max_seq_tokens": cut,
            "tokens": sum(len(e) for e in examples), "pairs": pairs, "positive_pairs": positives,
        }
        return examples

    # ------------------------------------------------------------------ the pass

    def collate(self, examples: Sequence[PairExample]) -> dict[str, Any]:  # type: ignore[override]
        """Right-padded prompts (positions unchanged: a model with absolute positions reads a row
        as it would alone), each row's product positions and pair labels."""
        width = max(len(e) for e in examples)
        ids = torch.full((len(examples), width), self.pad_id(), dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, e in enumerate(examples):
            ids[row, :len(e)] = torch.tensor(e.prompt_ids, dtype=torch.long)
            mask[row, :len(e)] = 1
        return {"input_ids": ids, "attention_mask": mask, "product_spans": [list(e.product_spans) for e in examples],
                "pair_labels": [torch.tensor(e.pair_labels, dtype=torch.float32) for e in examples]}

    def product_states(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Per row of ``batch``, its products' states (products x hidden) after block ``pair_layer``."""
        device = self.loaded_llm.loaded.device
        hidden = hidden_states(self.llm, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                               self.pair_block)
        if self.config["pair_pooling"] == "mean":  # every token of the product's line
            return [torch.stack([hidden[row, a:b + 1].mean(dim=0) for a, b in spans])
                    for row, spans in enumerate(batch["product_spans"])]
        # the line's last token, which has read the whole line
        return [hidden[row, torch.tensor([b for _, b in spans], device=device)]
                for row, spans in enumerate(batch["product_spans"])]

    def pair_logits(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Per row of ``batch``, the logits of its session's pairs (``session_pairs`` order)."""
        out = []
        for row, states in enumerate(self.product_states(batch)):
            if len(states) < 2:
                out.append(torch.zeros(0, device=states.device))
                continue
            out.append(self.head_logits(row, states, *pair_index(len(states), states.device)))
        return out

    def head_logits(self, row: int, states: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """The logits of the pairs (``first[k]``, ``second[k]``) of ``states``, the products of
        the batch's row ``row``."""
        return self.pair_head(states, first, second)

    def frozen_states(self, examples: Sequence[PairExample]) -> list[torch.Tensor]:
        """Each example's product states from the base model (adapters off, no gradients)."""
        order = sorted(range(len(examples)), key=lambda k: len(examples[k]))
        size = int(self.config["generation_batch_size"])
        out: list[torch.Tensor] = [torch.zeros(0)] * len(examples)
        bar = progress_bar(total=len(examples), desc=f"{type(self).__name__} frozen states", unit="session",
                           enabled=self.config["show_progress"] or None)
        with torch.no_grad(), base_model_only(self.llm):
            for first in range(0, len(order), size):
                rows = order[first:first + size]
                for k, states in zip(rows, self.product_states(self.collate([examples[k] for k in rows]))):
                    out[k] = states.float().cpu()
                bar.update(len(rows))
        bar.close()
        return out

    def calibrate(self, examples: Sequence[PairExample]) -> None:
        """Set the head's standardisation from the base model's states of ``examples``' products
        (the first :data:`CALIBRATION_SESSIONS` by id) unless it is set already."""
        if bool(self.pair_head.calibrated) or not examples:
            return
        chosen = sorted(examples, key=lambda e: e.session_id)[:CALIBRATION_SESSIONS]
        self.pair_head.calibrate(torch.cat(self.frozen_states(chosen)).to(self.pair_head.center.device))

    def before_training(self, examples: Sequence[PairExample]) -> None:
        """Linear probe, then fine-tune (LP-FT, Kumar et al., ICLR 2022): the head is standardised by
        every training product's state and fitted on the frozen model's states
        (``pair_probe_steps``) before the adapters train. A randomly initialised head trained with the
        adapters for a few hundred steps at the adapters' learning rate barely leaves the prior
        (Electronic: epoch loss 0.615 against a prior entropy of 0.62), and its noise is what
        the adapters then learn from. Deterministic (seeded), so a resumed run redoes it and
        then loads its checkpoint's head."""
        if not examples:
            return
        start = time.perf_counter()
        device = self.pair_head.center.device
        states = self.frozen_states(examples)
        self.pair_head.calibrated.fill_(False)
        self.pair_head.calibrate(torch.cat(states).to(device))
        steps = int(self.config["pair_probe_steps"])
        record: dict[str, Any] = {"steps": steps, "sessions": len(examples), "state_seconds": round(time.perf_counter() - start, 2)}
        if steps > 0:
            record.update(self._fit_head(states, [torch.tensor(e.pair_labels, dtype=torch.float32) for e in examples], steps))
        record["seconds"] = round(time.perf_counter() - start, 2)
        self.run_info["pair_probe"] = record

    def _fit_head(self, states: list[torch.Tensor], labels: list[torch.Tensor], steps: int) -> dict[str, float]:
        """``steps`` AdamW steps of the head alone on cached states, sessions drawn with the run's seed."""
        device = self.pair_head.center.device
        usable = [k for k, y in enumerate(labels) if len(y)]
        pairs = {n: pair_index(n, device) for n in {len(states[k]) for k in usable}}
        generator = torch.Generator().manual_seed(int(self.config["seed"]))
        optimizer = torch.optim.AdamW(self.pair_head.parameters(), lr=float(self.config["pair_probe_learning_rate"]),
                                      weight_decay=float(self.config["pair_probe_weight_decay"]))
        was_training = self.pair_head.training
        self.pair_head.train()
        positive = float(self.config["pair_positive_weight"])
        losses = []
        for _ in range(steps):
            chosen = torch.randint(len(usable), (min(PROBE_BATCH_SESSIONS, len(usable)),), generator=generator)
            logits, targets = [], []
            for k in (usable[int(c)] for c in chosen):
                logits.append(self.pair_head(states[k].to(device), *pairs[len(states[k])]))
                targets.append(labels[k].to(device))
            logit, target = torch.cat(logits), torch.cat(targets)
            weight = torch.where(target > 0, positive, 1.0)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, target, weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        self.pair_head.train(was_training)
        tenth = max(len(losses) // 10, 1)
        return {"loss_first_tenth": round(float(np.mean(losses[:tenth])), 4),
                "loss_last_tenth": round(float(np.mean(losses[-tenth:])), 4)}

    def calculate_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:  # type: ignore[override]
        """Binary cross-entropy of the pair logits, every pair of the batch weighing alike
        (positives weighted by ``pair_positive_weight``), and the number of pairs."""
        self.calibrate(self.calibration_examples)
        logits = torch.cat(self.pair_logits(batch))
        labels = torch.cat(batch["pair_labels"]).to(logits.device)
        weight = torch.where(labels > 0, float(self.config["pair_positive_weight"]), 1.0)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, weight=weight)
        return loss, int(labels.numel())

    def probabilities(self, sessions: Sequence[Session], views: Sequence[StudentView]) -> list[np.ndarray]:
        """Per session, the symmetric matrix of its pair probabilities (diagonal 0): one pass over
        each prompt, in batches of ``generation_batch_size`` prompts of similar length."""
        start = time.perf_counter()
        encoded = [self._encode(s, v) for s, v in zip(sessions, views)]
        self.last_prompt_ids = [ids for ids, _ in encoded]
        for session, view, (ids, _) in zip(sessions, views, encoded):
            self.note_prompt_ids(session, view, ids)
        order = sorted(range(len(sessions)), key=lambda k: len(encoded[k][0]))
        size = int(self.config["generation_batch_size"])
        probs: list[np.ndarray] = [np.zeros((0, 0))] * len(sessions)
        bar = progress_bar(total=len(sessions), desc=f"{type(self).__name__} sessions", unit="session",
                           enabled=self.config["show_progress"] or None)
        # Untrained (no training sessions): standardised by the scored sessions themselves (no labels).
        self.calibrate(self.calibration_examples or [PairExample(sessions[k].session_id, tuple(encoded[k][0]),
                                                                 tuple(encoded[k][1]), ()) for k in order])
        was_training = self.training
        self.eval()
        with torch.inference_mode():
            for first in range(0, len(order), size):
                rows = order[first:first + size]
                batch = self.collate([PairExample(sessions[k].session_id, tuple(encoded[k][0]), tuple(encoded[k][1]), ())
                                      for k in rows])
                for k, logits in zip(rows, self.pair_logits(batch)):
                    n = len(sessions[k])
                    matrix = np.zeros((n, n))
                    for (i, j), p in zip(session_pairs(n), torch.sigmoid(logits.float()).cpu().numpy()):
                        matrix[i, j] = matrix[j, i] = p
                    probs[k] = matrix
                bar.update(len(rows))
        bar.close()
        self.train(was_training)
        stats = self.run_info.setdefault("pair_pass", {"sessions": 0, "prompt_tokens": 0, "seconds": 0.0})
        stats["sessions"] += len(sessions)
        stats["prompt_tokens"] += sum(len(ids) for ids, _ in encoded)
        stats["seconds"] = round(stats["seconds"] + time.perf_counter() - start, 3)
        return probs

    def generate_bundles(self, sessions: Sequence[Session]) -> list[BundlePrediction]:
        views = self.views(sessions, training=False)
        out = []
        for session, view, prob in zip(sessions, views, self.probabilities(sessions, views)):
            out.append(with_view_details(grouped_prediction(session, prob, self.grouping), view))
        if self.strategy is not None:
            self.run_info["views"] = dict(self.strategy.stats)
        return out

    def tune(self, valid_sessions: Sequence[Session]) -> dict[str, Any] | None:
        """Grouping, fallback and threshold chosen on valid by exact F1 (as Pairwise's)."""
        sessions = [s for s in valid_sessions if s.bundles]
        if not self.config["pairwise_tune"] or not sessions:
            return None
        from recbole_bundlellm.models.base import without_labels

        probs = self.probabilities(sessions, self.views(without_labels(sessions), training=False))
        self.grouping, f1, jaccard = tune_grouping(probs, sessions, self.config["pairwise_tune_groupings"],
                                                   self.config["pairwise_tune_fallbacks"],
                                                   self.config["pairwise_tune_thresholds"])
        chosen = {"grouping": asdict(self.grouping), "valid_exact_f1": round(f1, 4),
                  "valid_best_jaccard": round(jaccard, 4), "valid_sessions": len(sessions)}
        self.run_info["decoding"] = chosen
        return chosen

    # ------------------------------------------------------------------ training's bookkeeping

    fingerprint_version = FINGERPRINT_VERSION
    tunes_every_validation = True

    def fingerprint_settings(self) -> dict[str, Any]:
        return {**self.training_settings(), **{k: self.config[k] for k in PAIR_KEYS}}

    def example_fingerprint(self, example: Any) -> list[bytes]:
        return [json.dumps([example.session_id, example.prompt_ids, example.product_spans, example.pair_labels]).encode()]

    def trained_state(self) -> dict[str, torch.Tensor]:
        return trainable_state(self)

    def adapter_record(self) -> dict[str, Any]:
        """BundleSFT's record and the pair settings (a mixture of PairSFT experts checks they agree)."""
        return {**super().adapter_record(), "pair_settings": {k: self.config[k] for k in PAIR_KEYS}}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        load_trainable_state(self, tensors)

    def save_adapter(self, folder: Path, fingerprint: str, info: dict[str, Any]) -> Path:
        """The LoRA adapter (a peft folder) with the pair head's weights beside it."""
        from safetensors.torch import save

        head = {k: v.detach().cpu().contiguous() for k, v in self.pair_head.state_dict().items()}
        return save_adapter(self.llm, folder, self.base, fingerprint,
                            {**info, "pair_head_dim": int(self.config["pair_head_dim"])}, extra_files={HEAD_FILE: save(head)})

    def load_adapter(self, folder: Path) -> dict[str, Any]:
        tensors = read_head(folder)
        info = super().load_adapter(folder)
        load_head(self.pair_head, tensors, Path(folder) / HEAD_FILE)
        return info


def pair_index(n: int, device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first and the second product of each pair of ``n`` products (``session_pairs`` order)."""
    pairs = session_pairs(n)
    return (torch.tensor([i for i, _ in pairs], dtype=torch.long, device=device),
            torch.tensor([j for _, j in pairs], dtype=torch.long, device=device))


def read_head(folder: str | Path) -> dict[str, torch.Tensor]:
    """The pair head's tensors saved in the adapter folder ``folder`` of a PairSFT run."""
    from recbole_bundlellm.llm.checkpoint import read_tensors

    head = Path(folder) / HEAD_FILE
    if not head.is_file():
        raise SettingsError(f"{folder} has no {HEAD_FILE}: it is not a PairSFT adapter (train one, or give "
                            "a PairSFT run's adapter/ folder)")
    return read_tensors(head, "delete the adapter folder to train again")


def load_head(head: PairHead, tensors: dict[str, torch.Tensor], where: Path) -> None:
    """``tensors`` (read from ``where``) into ``head``, or a clear error when their layout differs."""
    try:
        head.load_state_dict(tensors)
    except RuntimeError as exc:  # another head layout (an older PairSFT, another pair_head_dim)
        raise SettingsError(f"{where} does not fit this PairSFT's head ({str(exc).splitlines()[0]}); "
                            "delete the adapter folder to train again") from None
