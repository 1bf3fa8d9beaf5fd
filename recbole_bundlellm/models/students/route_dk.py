"""RouteDK: frozen LoRA experts of one base model, mixed per input by a fusion router.

Feng et al. (2025), *Routing Distilled Knowledge via Mixture of LoRA Experts for LLM-based
Bundle Generation*: a base expert (LoRA on the raw task) and one expert per knowledge kind
(rules, thoughts, ...), each trained by BundleSFT, are combined by a router that reads the input
and weighs the experts for it; only the router trains (experts frozen), on the training split
with the loss on answer tokens, through the same :class:`~recbole_bundlellm.training.sft_trainer.SFTTrainer`
(best epoch on valid, safetensors checkpoints, reuse by fingerprint).

- ``experts`` (kind -> adapter folder, or the output folder of the BundleSFT run that trained
  it) come from the :class:`~recbole_bundlellm.fusion.experts.ExpertStore`, which refuses
  experts of another base model.
- ``fusion_router`` names a router plugin (``bundlellm plugins``): ``input_aware`` (RouteDK),
  ``uniform``, ``fixed`` (one expert alone, or set weights), ``static_merge`` (weights chosen on
  valid, merged into one adapter with peft's ``add_weighted_adapter``). A router module maps the
  prompt's representation (the frozen base model's hidden states, pooled: ``routing_pooling``)
  to one weight per expert; :class:`~recbole_bundlellm.fusion.mixture.MixtureOfLoRA` applies
  them in one forward pass. A router that opts in (``input_aware: {session_features: True}``)
  also reads each prompt's session features (:mod:`~recbole_bundlellm.fusion.features`: products,
  prompt tokens, the ``knowledge_use`` kinds the prompt holds), noted as each prompt is built.
- Each session's weights go to the predictions file (``routing``), their summary (mean weight
  per expert, entropy) to the run's metrics, and a plot to ``routing.png``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from recbole_bundlellm.llm.checkpoint import read_tensors
from recbole_bundlellm.llm.lora import (ADAPTER_INFO, AdapterError, check_base, count_parameters, trainable_state,
                                               weights_hashes)
from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.fileio import atomic_folder, atomic_write_text
from recbole_bundlellm.adaptation.knowledge_source import knowledge_use
from recbole_bundlellm.adaptation.strategy import StudentView
from recbole_bundlellm.fusion import build_router, uses_session_features
from recbole_bundlellm.fusion.experts import Expert, ExpertStore
from recbole_bundlellm.fusion.features import SessionFeatures, feature_names, session_feature_row
from recbole_bundlellm.fusion.mixture import MixtureOfLoRA, load_experts
from recbole_bundlellm.fusion.representation import RepresentationCache
from recbole_bundlellm.generation.backend import GenerationContext
from recbole_bundlellm.generation.chat import cut_prompt, prompt_token_ids
from recbole_bundlellm.models.base import BundlePrediction
from recbole_bundlellm.models.students.bundle_sft import METRIC_SUMMARY_KEYS, BundleSFT
from recbole_bundlellm.settings import SettingsError

logger = logging.getLogger(__name__)
ROUTER_FILE = "router.safetensors"
ROUTER_VERSION = "routedk-v1"
#: The adapter peft builds from a static merge of the experts (one LoRA, no mixture at inference).
MERGED = "merged"


def _settings_dict(settings: Any) -> dict[str, Any]:
    return asdict(settings) if is_dataclass(settings) else {}


def _features_said(names: Sequence[str]) -> str:
    return f"the session features {list(names)}" if names else "no session features"


class RouteDK(BundleSFT):
    """Frozen LoRA experts mixed per input by a router (only the router trains)."""

    in_process_only: ClassVar[str | None] = ("mixes its LoRA experts per input inside the student's forward pass "
                                             "in this process (a per-batch context)")

    #: The model whose runs train the experts, and an ``experts:`` mapping of such runs (error messages).
    expert_model = "BundleSFT"
    experts_example = ("{base: outputs/electronic/studies/format/raw_sft, rules: outputs/electronic/studies/format/"
                       "rules_sft}")

    def resolve_experts(self, config: Any) -> list[Expert]:
        """The experts ``experts:`` names, each checked to be a LoRA adapter of this base model (a
        subclass adds the checks its experts need)."""
        experts = config["experts"]
        name = type(self).__name__
        if not isinstance(experts, dict) or not experts:
            raise SettingsError(f"{name} needs 'experts': a mapping kind -> adapter folder (or the output folder of "
                                f"the {self.expert_model} run that trained it), e.g. {self.experts_example}; "
                                "`bundlellm experts` lists the trained ones")
        if self.full_finetune:
            raise SettingsError(f"{name} mixes LoRA experts; full_finetune does not apply (set it to False)")
        store = ExpertStore(config["experts_root"], self.base)
        return [store.get(str(kind), location) for kind, location in experts.items()]

    def trainable_model(self, model: Any, config: Any) -> Any:
        self.experts: list[Expert] = self.resolve_experts(config)
        kinds = [e.kind for e in self.experts]
        peft_model = load_experts(model, {e.kind: e.folder for e in self.experts}, self.base)
        self.mixture = MixtureOfLoRA(peft_model, kinds)
        self.router_name = str(config["fusion_router"])
        self.router_component = config.host.create("router", self.router_name, config)
        hidden_size = int(model.config.hidden_size)
        #: The session features the model gives a router that reads them (each prompt's, by its token ids).
        self.feature_names = feature_names(knowledge_use(config))
        self.session_features: dict[tuple[int, ...], tuple[float, ...]] = {}
        self.router = build_router(self.router_component, kinds, hidden_size, self.mixture.n_layers,
                                   self.feature_names)
        self.router_features = list(self.feature_names) if uses_session_features(self.router) else []
        self.representations = RepresentationCache(peft_model, self.pad_id(), str(config["routing_pooling"]),
                                                   layer=int(config["routing_layer"]))
        self.routed: dict[tuple[int, ...], torch.Tensor] = {}  # prompt ids -> its weights at generation
        self._forced: torch.Tensor | None = None  # weights every input gets instead of the router's
        self.merged_weights: list[float] | None = None
        self.run_info["experts"] = [e.summary() for e in self.experts]
        self.run_info["router"] = {"name": self.router_name, "trainable": bool(self.router_component.trainable),
                                   "settings": _settings_dict(self.router_component.settings),
                                   "pooling": config["routing_pooling"], "layer": int(config["routing_layer"])}
        if self.router_features:
            self.run_info["router"]["session_features"] = self.router_features
        return peft_model

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        #: The token ids the student read for each prompt of the last generation (cut as the backend cuts them).
        self.prompt_ids_read: list[list[int]] = []
        self.run_info["parameters"] = count_parameters(self)  # the router's, as the experts are frozen

    def generation_context(self) -> GenerationContext:
        """BundleSFT's, with each batch generating under its prompts' routing weights."""
        return dataclasses.replace(super().generation_context(), batch_context=self._routed_batch)

    # ------------------------------------------------------------------ training

    def train(self, mode: bool = True) -> RouteDK:
        """Only the router switches to training: the frozen experts run as at inference (no LoRA
        dropout), so the router learns for the mixture it will drive, through the one-pass
        stacked mixture rather than one dropout and delta per expert."""
        super().train(mode)
        self.llm.eval()
        return self

    @property
    def trains(self) -> bool:
        """False for routers with nothing to learn (uniform, fixed, static merge)."""
        return any(p.requires_grad for p in self.router.parameters())

    def calculate_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """The answer-token loss of the experts mixed by the router's weights for each prompt."""
        from recbole_bundlellm.llm.batches import answer_loss

        prompts = [batch["input_ids"][row, :int(n)].tolist() for row, n in enumerate(batch["prompt_lengths"])]
        weights = self.router_weights(prompts)
        with self.mixture.weights(weights):
            return answer_loss(self.llm, batch)

    # ------------------------------------------------------------------ the router's input

    def router_weights(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """The router's weights for ``prompts`` (token ids): from their representations, and for
        a router that reads them (``uses_session_features``) their session features too."""
        representation = self.representations(prompts)
        if not uses_session_features(self.router):
            return self.router(representation)
        return self.router(representation, self.prompt_features(prompts).to(representation.device))

    def note_prompt_ids(self, session: Session, view: StudentView, prompt_ids: Sequence[int]) -> None:
        """Keep the session features of the prompt ``prompt_ids`` for a router that reads them."""
        if uses_session_features(self.router):
            key = tuple(int(t) for t in prompt_ids)
            self.session_features[key] = session_feature_row(session, view, len(key), self.feature_names)

    def note_prompts(self, sessions: Sequence[Session], views: Sequence[StudentView],
                     prompts: Sequence[Sequence[dict[str, str]]]) -> None:
        """The session features of each prompt about to be generated for, by the token ids the
        student reads (cut as :meth:`answers` cuts them), for a router that reads them."""
        if uses_session_features(self.router):
            limit = self.generation.max_prompt_tokens
            for session, view, prompt in zip(sessions, views, prompts):
                self.note_prompt_ids(session, view, cut_prompt(prompt_token_ids(self.tokenizer, prompt), limit))

    def prompt_features(self, prompts: Sequence[Sequence[int]]) -> SessionFeatures:
        """The noted session features of ``prompts`` (token ids), in order."""
        rows = []
        for ids in prompts:
            row = self.session_features.get(tuple(int(t) for t in ids))
            if row is None:
                raise RuntimeError(f"no session features were noted for a prompt of {len(ids)} tokens: the model "
                                   "must call note_prompt_ids (or note_prompts) for every prompt its router reads")
            rows.append(row)
        return SessionFeatures.from_rows(self.feature_names, rows)

    def fingerprint(self, examples: Sequence[Any], valid_sessions: Sequence[Session]) -> str:
        """BundleSFT's (base, examples, valid prompts, settings) plus the experts and the router."""
        digest = hashlib.sha256(super().fingerprint(examples, valid_sessions).encode())
        settings = _settings_dict(self.router_component.settings)
        if settings.get("session_features") is False:  # the default leaves routers trained before the key reusable
            del settings["session_features"]
        parts = [ROUTER_VERSION, [(e.kind, e.fingerprint) for e in self.experts], self.router_name,
                 settings, self.config["routing_pooling"]]
        if int(self.config["routing_layer"]) != -1:  # the default leaves routers trained before the key reusable
            parts.append(int(self.config["routing_layer"]))
        if self.router_features:  # what the router reads besides the representation (any router's opt-in)
            parts.append({"session_features": self.router_features})
        digest.update(json.dumps(parts, sort_keys=True, default=str).encode())
        return digest.hexdigest()

    def trained_state(self) -> dict[str, torch.Tensor]:
        return trainable_state(self.router)

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        from recbole_bundlellm.llm.lora import load_trainable_state

        load_trainable_state(self.router, tensors)

    def adapter_record(self) -> dict[str, Any]:
        return {**super().adapter_record(), "router": self.run_info["router"],
                "experts": [{"kind": e.kind, "folder": str(e.folder), "fingerprint": e.fingerprint}
                            for e in self.experts], "merged_weights": self.merged_weights}

    def save_adapter(self, folder: Path, fingerprint: str, info: dict[str, Any]) -> Path:
        """The router (its whole state, safetensors) beside the experts' fingerprints; written to a
        temporary folder and renamed, as adapters are."""
        from safetensors.torch import save_file

        with atomic_folder(folder) as tmp:
            state = {k: v.detach().cpu().contiguous() for k, v in self.router.state_dict().items()}
            save_file(state, str(tmp / ROUTER_FILE), metadata={"router": self.router_name})
            record = {"base_model": vars(self.base), "fingerprint": fingerprint, "kind": "router",
                      **self.adapter_record(), **info, "weights_sha256": weights_hashes(tmp)}
            atomic_write_text(tmp / ADAPTER_INFO, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        return Path(folder)

    def load_adapter(self, folder: Path) -> dict[str, Any]:
        """Load a saved router; its experts must be this model's (same kinds and fingerprints)."""
        info = check_base(folder, self.base)
        if info.get("kind") != "router" or not (Path(folder) / ROUTER_FILE).is_file():
            raise SettingsError(f"{folder} is not a router saved by a RouteDK run (no {ROUTER_FILE})")
        saved = [(e["kind"], e["fingerprint"]) for e in info.get("experts", [])]
        mine = [(e.kind, e.fingerprint) for e in self.experts]
        if saved != mine:
            raise AdapterError(f"the router {folder} was trained on the experts {saved}, not on this model's {mine}; "
                               "train a router for these experts")
        read = list(info.get("router", {}).get("session_features") or [])
        if read != self.router_features:
            raise AdapterError(f"the router {folder} was trained reading {_features_said(read)}, this run's router "
                               f"reads {_features_said(self.router_features)}; use the settings it was trained with "
                               "(session_features, knowledge_use) or train a router for these")
        tensors = read_tensors(Path(folder) / ROUTER_FILE, "delete the router's folder to train it again")
        try:
            self.router.load_state_dict(tensors)
        except RuntimeError as exc:
            raise SettingsError(f"{folder} does not fit this router's settings ({str(exc).splitlines()[0]}); "
                                "use the settings it was trained with") from exc
        if info.get("merged_weights"):
            self._merge(info["merged_weights"])
        return info

    # ------------------------------------------------------------------ generation

    @contextlib.contextmanager
    def _routed_batch(self, token_ids: Sequence[Sequence[int]]) -> Iterator[None]:
        """Generation of one batch under its prompts' routing weights (the backend calls this)."""
        if self.merged_weights is not None:  # one merged adapter: peft's own forward, no mixture
            yield
            return
        if self._forced is not None:  # one expert's own answer (vote_experts)
            with self.mixture.weights(self._forced.expand(len(token_ids), -1)):
                yield
            return
        with self.mixture.weights(self.route(token_ids)):
            yield

    def route(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """The router's weights for ``prompts`` (token ids), each prompt's kept in ``routed`` for
        its prediction (per-layer weights as their mean over the layers)."""
        weights = self.router_weights(prompts).float()
        for ids, row in zip(prompts, weights.detach()):
            self.routed[tuple(int(t) for t in ids)] = (row.mean(0) if row.dim() == 2 else row).cpu()
        return weights

    def answers(self, prompts: Sequence[Sequence[dict[str, str]]]) -> list[list[str]]:
        """The routed answers (``vote_samples`` of them), plus with ``vote_experts`` one greedy
        answer per expert alone: the vote then also weighs what each kind of knowledge says."""
        limit = self.generation.max_prompt_tokens
        self.prompt_ids_read = [cut_prompt(prompt_token_ids(self.tokenizer, p), limit) for p in prompts]
        texts = super().answers(prompts)
        if not self.config["vote_experts"]:
            return texts
        config = self.generation
        saved = (config.do_sample, config.num_return_sequences)
        config.do_sample, config.num_return_sequences = False, 1
        try:
            for e in range(len(self.experts)):
                self._forced = torch.nn.functional.one_hot(torch.tensor([e]), len(self.experts)).float()
                for row, extra in zip(texts, super().answers(prompts)):
                    row.extend(extra)
        finally:
            self._forced = None
            config.do_sample, config.num_return_sequences = saved
        return texts

    def generate_bundles(self, sessions: Sequence[Session]) -> list[BundlePrediction]:
        self.routed = {}  # only this call's prompts
        predictions = super().generate_bundles(sessions)
        kinds = [e.kind for e in self.experts]
        rows = []
        for prediction, ids in zip(predictions, self.routed_prompt_ids()):
            if self.merged_weights is not None:
                row = torch.tensor(self.merged_weights)
            else:
                row = self.routed.get(tuple(ids))
            if row is not None:
                rows.append(row)
                prediction.details["routing"] = {k: round(float(w), 4) for k, w in zip(kinds, row)}
        if rows:
            self.run_info["routing"] = routing_summary(kinds, torch.stack(rows))
            self.routing_rows = torch.stack(rows)
        return predictions

    def routed_prompt_ids(self) -> Sequence[Sequence[int]]:
        """The prompt token ids of the last call's sessions, in order (the keys of ``routed``)."""
        return self.prompt_ids_read

    def write_artifacts(self, folder: Path) -> None:
        """``routing.png``: each expert's weight across the test sessions (the runner calls this)."""
        rows = getattr(self, "routing_rows", None)
        if rows is not None:
            plot_routing([e.kind for e in self.experts], rows, Path(folder) / "routing.png",
                         f"{self.config['run_name'] or 'RouteDK'}: routing weights")

    # ------------------------------------------------------------------ static weights chosen on valid

    def tune(self, valid_sessions: Sequence[Session]) -> dict[str, Any] | None:
        """Weights of a static router chosen on valid (``static_merge``), then BundleSFT's label biases."""
        candidates = self.router_component.candidates([e.kind for e in self.experts])
        chosen: dict[str, Any] = {}
        if candidates and valid_sessions and self.merged_weights is None:
            chosen["static_weights"] = self._choose_weights(candidates, valid_sessions)
        decoding = super().tune(valid_sessions)
        if decoding is not None:
            chosen["decoding"] = decoding
        return chosen or None

    def static_metric(self) -> str:
        """The key of :meth:`static_score`'s metric: ``valid_metric``'s."""
        return METRIC_SUMMARY_KEYS.get(str(self.config["valid_metric"]).lower(), "exact_f1")

    def static_score(self, valid: Sequence[Session]) -> float:
        """:meth:`static_metric` of the bundles the current router gives the ``valid`` sessions."""
        from recbole_bundlellm.evaluation.bundle_metrics import compute_bundle_metrics
        from recbole_bundlellm.models.base import without_labels

        truth, items = [list(s.bundles) for s in valid], [frozenset(s.item_ids) for s in valid]
        predictions = self.generate_bundles(without_labels(valid))
        pred = [None if p.failed else [frozenset(b) for b in p.bundles] for p in predictions]
        return compute_bundle_metrics(pred, truth, items)[self.static_metric()]

    def _choose_weights(self, candidates: Sequence[Sequence[float]], valid: Sequence[Session]) -> dict[str, Any]:
        from recbole_bundlellm.fusion.router import StaticRouter

        metric = self.static_metric()
        kinds = [e.kind for e in self.experts]
        scores = []
        for weights in candidates:
            self.router = StaticRouter(kinds, self.router.input_size, weights)
            scores.append(self.static_score(valid))
        best = max(range(len(candidates)), key=lambda i: (scores[i], -i))  # ties: the earlier candidate
        self.router = StaticRouter(kinds, self.router.input_size, candidates[best])
        self._merge([float(w) for w in self.router.weights])
        self.backend.reset_stats()
        return {"weights": dict(zip(kinds, self.merged_weights or [])), metric: round(scores[best], 4),
                "grid": [{"weights": list(c), metric: round(s, 4)} for c, s in zip(candidates, scores)]}

    def _merge(self, weights: Sequence[float]) -> None:
        """The experts merged into one LoRA with ``weights`` (peft's ``add_weighted_adapter``,
        ``cat``: the merged delta is exactly the weighted sum of the experts' deltas), active from now on."""
        kinds = [e.kind for e in self.experts]
        kept = [(k, float(w)) for k, w in zip(kinds, weights) if w > 0]
        if MERGED in self.llm.peft_config:
            self.llm.delete_adapter(MERGED)
        self.llm.add_weighted_adapter([k for k, _ in kept], [w for _, w in kept], MERGED, combination_type="cat")
        self.llm.set_adapter(MERGED)
        for param in self.llm.parameters():  # set_adapter makes the active adapter trainable again
            param.requires_grad_(False)
        self.merged_weights = [float(w) for w in weights]
        self.run_info["router"]["merged_weights"] = dict(zip(kinds, self.merged_weights))


def routing_summary(kinds: Sequence[str], rows: torch.Tensor) -> dict[str, Any]:
    """Mean weight per expert, mean entropy (nats; log(n) is uniform) and how often each expert weighs most."""
    rows = rows.float()
    entropy = -(rows.clamp(min=1e-12).log() * rows).sum(-1)
    top = rows.argmax(-1)
    return {"sessions": int(rows.shape[0]),
            "mean_weight": {k: round(float(rows[:, i].mean()), 4) for i, k in enumerate(kinds)},
            "std_weight": {k: round(float(rows[:, i].std(unbiased=False)), 4) for i, k in enumerate(kinds)},
            "top_expert_share": {k: round(float((top == i).float().mean()), 4) for i, k in enumerate(kinds)},
            "mean_entropy": round(float(entropy.mean()), 4), "max_entropy": round(math.log(len(kinds)), 4)}


def plot_routing(kinds: Sequence[str], rows: torch.Tensor, path: Path, title: str) -> Path:
    """A stacked bar per session (sorted by the first expert's weight) of the experts' weights."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = torch.argsort(rows[:, 0], descending=True)
    data = rows[order].numpy()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    bottom = data[:, 0] * 0
    for i, kind in enumerate(kinds):
        ax.bar(range(len(data)), data[:, i], bottom=bottom, width=1.0, label=kind)
        bottom = bottom + data[:, i]
    ax.set_xlabel("test session (sorted by the first expert's weight)")
    ax.set_ylabel("weight")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = ["RouteDK", "plot_routing", "routing_summary"]
