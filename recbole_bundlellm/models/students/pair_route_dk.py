"""PairRouteDK: RouteDK's router over PairSFT experts (pair scores, not generated answers).

RouteDK (:mod:`.route_dk`) mixes frozen LoRA experts of BundleSFT runs, whose generated answers
stay below the label-free floors on a small student. PairSFT (:mod:`.pair_sft`) is the student
that beats them: it reads each product's state after block ``pair_layer`` of one pass over the
prompt and scores every product pair with its pair head. PairRouteDK asks RouteDK's question of
those experts: does a router that weighs the knowledge experts per input beat the best single
expert, and naive joint training (one PairSFT adapter on all the knowledge)?

- ``experts`` (kind -> a PairSFT run's output folder, or its ``adapter/``) are PairSFT adapters:
  each must hold ``pair_head.safetensors``, have been trained on this base model, and read the
  same states (``pair_layer`` and ``pair_pooling``, which this run must set alike).
- Their LoRA adapters are loaded into one model and mixed per input by
  :class:`~recbole_bundlellm.fusion.mixture.MixtureOfLoRA` (one pass up to ``pair_layer``); the
  router reads the frozen base model's prompt representation (``routing_pooling``,
  ``routing_layer``), as RouteDK's does. Routers are RouteDK's plugins: ``input_aware``,
  ``uniform``, ``fixed``, ``static_merge`` (its weights chosen on valid by the exact F1 of the
  grouping tuned for them, then merged into one adapter); ``per_layer`` weights mix the heads by
  their mean over the layers.
- A pair's logit is the router-weighted mixture of the experts' frozen heads applied to the mixed
  states, ``sum_k w_k * head_k(states)``. One head alone would not do: each head was fitted
  (standardisation, projection, scorer) to the states of its own expert's adapter, so no single
  head reads the others' states, and a new head would have to be trained as well. Mixing the heads
  with the adapters' weights keeps every expert whole: with one-hot weights the model is exactly
  that expert (its adapter and its head), so the router starts from, and can fall back on, the
  experts themselves.
- Only the router trains (experts and heads frozen), on the pairs' binary cross-entropy over the
  training sessions, through :class:`~recbole_bundlellm.training.sft_trainer.SFTTrainer` as RouteDK's
  does: the untrained router (the uniform mixture) is validated first, the best epoch on valid is
  kept, checkpoints resume, and a router of the same fingerprint (base, examples, valid prompts,
  settings, experts' fingerprints, router) is reused. The grouping is tuned on valid as PairSFT's.
- Each session's weights go to ``predictions.jsonl`` (``routing``), their summary to the run's
  metrics (``info.routing``) and a plot to ``routing.png``, as RouteDK's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.fusion.experts import Expert, run_config
from recbole_bundlellm.llm.lora import AdapterError
from recbole_bundlellm.models.students.pair_sft import HEAD_FILE, PairExample, PairHead, PairSFT, load_head, read_head
from recbole_bundlellm.models.students.route_dk import RouteDK
from recbole_bundlellm.settings import SettingsError

FINGERPRINT_VERSION = "pair-routedk-v1"
#: What every expert's head must have read, and this run with it.
STATE_KEYS = ("pair_layer", "pair_pooling")


class ExpertHeads(torch.nn.Module):
    """The experts' frozen pair heads, their logits mixed by one weight per expert."""

    def __init__(self, heads: Sequence[PairHead]) -> None:
        super().__init__()
        self.heads = torch.nn.ModuleList(heads)
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> ExpertHeads:
        """Always as at inference: a head's dropout belongs to its own training, done already."""
        return super().train(False)

    def forward(self, states: torch.Tensor, first: torch.Tensor, second: torch.Tensor,
                weights: torch.Tensor) -> torch.Tensor:
        """``sum_k weights[k] * head_k(states)`` for the pairs (``first[k]``, ``second[k]``)."""
        logits = torch.stack([head(states, first, second) for head in self.heads])  # experts x pairs
        return (weights.to(logits.device, logits.dtype)[:, None] * logits).sum(dim=0)


def expert_states(expert: Expert) -> dict[str, Any]:
    """The ``pair_layer`` and ``pair_pooling`` an expert's head read: from its adapter record, or
    (adapters saved before the record held them) from its run's ``config.yaml``."""
    recorded = expert.info.get("pair_settings") or run_config(expert.folder) or {}
    if any(k not in recorded for k in STATE_KEYS):
        raise AdapterError(f"expert '{expert.kind}' at {expert.folder} does not say which states its head read "
                           f"({' and '.join(STATE_KEYS)}: not in its record, no config.yaml beside it); give the "
                           "PairSFT run's output folder")
    return {k: recorded[k] for k in STATE_KEYS}


class PairRouteDK(RouteDK, PairSFT):
    """Frozen PairSFT experts (LoRA adapter + pair head each) mixed per input by a router."""

    expert_model = "PairSFT"
    experts_example = ("{base: outputs/electronic/studies/routedk/pair_expert_base, patterns: "
                       "outputs/electronic/studies/routedk/pair_expert_patterns}")
    fingerprint_version = FINGERPRINT_VERSION

    def __init__(self, config: Any, dataset: Any) -> None:
        if config["vote_experts"]:
            raise SettingsError("PairRouteDK scores pairs and generates no answer: vote_experts does not apply "
                                "(set it to False)")
        super().__init__(config, dataset)
        self._head_weights: torch.Tensor | None = None  # per row of the batch in the pass, one weight per expert

    def resolve_experts(self, config: Any) -> list[Expert]:
        """RouteDK's experts, each a PairSFT adapter (with its head) reading the states this run reads."""
        experts = super().resolve_experts(config)
        states = {}
        for expert in experts:
            if not (expert.folder / HEAD_FILE).is_file():
                raise AdapterError(f"expert '{expert.kind}' at {expert.folder} has no {HEAD_FILE}: it is not a "
                                   "PairSFT adapter (a BundleSFT expert goes to RouteDK); train it with a PairSFT "
                                   "config and give that run's output folder")
            states[expert.kind] = expert_states(expert)
        kinds = list(states)
        for kind in kinds[1:]:
            if states[kind] != states[kinds[0]]:
                raise SettingsError(f"experts '{kinds[0]}' and '{kind}' read different states ({states[kinds[0]]} "
                                    f"against {states[kind]}): their heads cannot score one mixed pass; train the "
                                    "experts with the same pair_layer and pair_pooling")
        mine = {k: config[k] for k in STATE_KEYS}
        if mine != states[kinds[0]]:
            wanted = ", ".join(f"{k}: {v}" for k, v in states[kinds[0]].items())
            raise SettingsError(f"the experts' heads read {states[kinds[0]]}, this run {mine}; set {wanted}")
        return experts

    def build_pair_head(self, config: Any) -> torch.nn.Module:
        """Every expert's head, as its PairSFT run saved it (frozen)."""
        hidden = int(self.llm.config.hidden_size)
        heads = []
        for expert in self.experts:
            tensors = read_head(expert.folder)
            width = tensors.get("project.weight")
            head = PairHead(hidden, int(width.shape[0]) if width is not None else int(config["pair_head_dim"]))
            load_head(head, tensors, expert.folder / HEAD_FILE)
            heads.append(head)
        return ExpertHeads(heads)

    # ------------------------------------------------------------------ the pass

    def product_states(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """PairSFT's states, read through the experts mixed by each row's routing weights."""
        prompts = [batch["input_ids"][row, :int(n)].tolist() for row, n in enumerate(batch["attention_mask"].sum(1))]
        if self.merged_weights is not None:  # one merged adapter (static_merge): peft's own forward
            self._head_weights = torch.tensor(self.merged_weights).expand(len(prompts), -1)
            return super().product_states(batch)
        weights = self.route(prompts)
        self._head_weights = weights.mean(dim=1) if weights.dim() == 3 else weights
        with self.mixture.weights(weights):
            return super().product_states(batch)

    def head_logits(self, row: int, states: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        assert self._head_weights is not None  # set by product_states, which gives the states
        return self.pair_head(states, first, second, self._head_weights[row])

    #: The pairs' binary cross-entropy (RouteDK's is the answer tokens'), the router's gradient only.
    calculate_loss = PairSFT.calculate_loss

    def calibrate(self, examples: Sequence[PairExample]) -> None:
        """Nothing: each expert's head keeps the standardisation it was trained with."""

    def before_training(self, examples: Sequence[PairExample]) -> None:
        """Nothing to fit before the router trains (the heads are the experts'); the trainer then
        validates the untrained router, the uniform mixture, as the first candidate."""

    def routed_prompt_ids(self) -> Sequence[Sequence[int]]:
        return self.last_prompt_ids

    # ------------------------------------------------------------------ static weights chosen on valid

    def static_metric(self) -> str:
        return "exact_f1" if self.config["pairwise_tune"] else super().static_metric()

    def static_score(self, valid: Sequence[Session]) -> float:
        """The valid exact F1 of the grouping tuned for the current static weights (PairSFT's tuning)."""
        tuned = PairSFT.tune(self, valid)
        return float(tuned["valid_exact_f1"]) if tuned is not None else super().static_score(valid)


__all__ = ["ExpertHeads", "PairRouteDK", "expert_states"]
