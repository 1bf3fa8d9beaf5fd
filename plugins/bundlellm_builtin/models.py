"""Plugin ``models``: the built-in bundle models (Freq, BundleLLM, BundleSFT, Floor, Pairwise)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from recbole_bundlellm.hookspecs import hookimpl
from recbole_bundlellm.registry import ModelSpec

_MODELS = Path(__import__("recbole_bundlellm").__file__).resolve().parent / "models"
_TRAINER = "recbole_bundlellm.trainer:BundleTrainer"


@hookimpl
def register_models(register: Callable[[ModelSpec], None]) -> None:
    register(ModelSpec("Freq", "recbole_bundlellm.models.freq:Freq", (_MODELS / "Freq.yaml",), _TRAINER,
                       description="frequent category patterns of training bundles (mlxtend Apriori)"))
    register(ModelSpec("BundleLLM", "recbole_bundlellm.models.bundlellm:BundleLLM", (_MODELS / "BundleLLM.yaml",),
                       _TRAINER, description="student LLM prompted: zero-/one-shot, or icl (retrieved examples and knowledge)"))
    register(ModelSpec("BundleSFT", "recbole_bundlellm.models.bundle_sft:BundleSFT",
                       (_MODELS / "BundleLLM.yaml", _MODELS / "BundleSFT.yaml"), "recbole_bundlellm.sft_trainer:SFTTrainer",
                       description="student LLM fine-tuned with LoRA on sessions and their knowledge (sft / icl_sft)"))
    register(ModelSpec("Floor", "recbole_bundlellm.models.floor:Floor", (_MODELS / "Floor.yaml",), _TRAINER,
                       description="label-free floors: whole session, first two, adjacent or random pairs"))
    register(ModelSpec("Pairwise", "recbole_bundlellm.models.pairwise:Pairwise", (_MODELS / "Pairwise.yaml",),
                       _TRAINER, description="learned same-bundle pair classifier + grouping tuned on valid (no LLM)"))
    register(ModelSpec("BGN", "recbole_bundlellm.models.bgn:BGN", (_MODELS / "NeuralBundle.yaml", _MODELS / "BGN.yaml"),
                       "recbole_bundlellm.neural_trainer:NeuralBundleTrainer",
                       description="bundle generation network: pointer decoder, diversity-penalised beam search (Bai et al. 2019)"))
