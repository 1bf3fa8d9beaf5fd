"""Plugin ``models``: the built-in bundle models (Freq, BundleLLM, BundleSFT, PairSFT, RouteDK, Floor, Pairwise, RecBoleBundler,
TeacherLLM and the classical baselines BBPR, POG, BGN)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from recbole_bundlellm.hookspecs import hookimpl
from recbole_bundlellm.registry import ModelSpec

_MODELS = Path(__import__("recbole_bundlellm").__file__).resolve().parent / "models"
_TRAINER = "recbole_bundlellm.trainer:BundleTrainer"
_NEURAL = "recbole_bundlellm.neural_trainer:NeuralBundleTrainer"


@hookimpl
def register_models(register: Callable[[ModelSpec], None]) -> None:
    register(ModelSpec("Freq", "recbole_bundlellm.models.freq:Freq", (_MODELS / "Freq.yaml",), _TRAINER,
                       description="frequent category patterns of training bundles (mlxtend Apriori)"))
    register(ModelSpec("BundleLLM", "recbole_bundlellm.models.bundlellm:BundleLLM", (_MODELS / "BundleLLM.yaml",),
                       _TRAINER, description="student LLM prompted: zero-/one-shot, or icl (retrieved examples and knowledge)"))
    register(ModelSpec("BundleSFT", "recbole_bundlellm.models.bundle_sft:BundleSFT",
                       (_MODELS / "BundleLLM.yaml", _MODELS / "BundleSFT.yaml"), "recbole_bundlellm.sft_trainer:SFTTrainer",
                       description="student LLM fine-tuned with LoRA on sessions and their knowledge (sft / icl_sft)"))
    register(ModelSpec("PairSFT", "recbole_bundlellm.models.pair_sft:PairSFT",
                       (_MODELS / "BundleLLM.yaml", _MODELS / "BundleSFT.yaml", _MODELS / "PairSFT.yaml"),
                       "recbole_bundlellm.sft_trainer:SFTTrainer",
                       description="student LLM scoring product pairs from its hidden states (LoRA + pair head), grouped as Pairwise"))
    register(ModelSpec("RouteDK", "recbole_bundlellm.models.route_dk:RouteDK",
                       (_MODELS / "BundleLLM.yaml", _MODELS / "BundleSFT.yaml", _MODELS / "RouteDK.yaml"),
                       "recbole_bundlellm.sft_trainer:SFTTrainer",
                       description="RouteDK: frozen LoRA experts (base, rules, thoughts, ...) mixed per input by a learned router"))
    register(ModelSpec("Floor", "recbole_bundlellm.models.floor:Floor", (_MODELS / "Floor.yaml",), _TRAINER,
                       description="label-free floors: whole session, first two, adjacent or random pairs"))
    register(ModelSpec("Pairwise", "recbole_bundlellm.models.pairwise:Pairwise", (_MODELS / "Pairwise.yaml",),
                       _TRAINER, description="learned same-bundle pair classifier + grouping tuned on valid (no LLM)"))
    register(ModelSpec("TeacherLLM", "recbole_bundlellm.models.teacher_llm:TeacherLLM", (_MODELS / "TeacherLLM.yaml",),
                       _TRAINER, description="the teacher endpoint prompted as the student (calls cached in knowledge_dir)"))
    register(ModelSpec("POG", "recbole_bundlellm.models.pog:POG", (_MODELS / "NeuralBundle.yaml", _MODELS / "POG.yaml"),
                       _NEURAL, description="transformer encoder over the session + pointer decoder generating its bundles (POG, KDD 2019)"))
    register(ModelSpec("BBPR", "recbole_bundlellm.models.bbpr:BBPR", (_MODELS / "NeuralBundle.yaml", _MODELS / "BBPR.yaml"),
                       _NEURAL, description="bundle BPR on title/category item encodings + greedy bundle construction (Pathak et al. 2017)"))
    register(ModelSpec("RecBoleBundler", "recbole_bundlellm.models.recbole_bundler:RecBoleBundler",
                       (_MODELS / "RecBoleBundler.yaml",), _TRAINER,
                       description="any RecBole item-scoring model's item affinity + grouping tuned on valid (no LLM)"))
    register(ModelSpec("BGN", "recbole_bundlellm.models.bgn:BGN", (_MODELS / "NeuralBundle.yaml", _MODELS / "BGN.yaml"),
                       _NEURAL, description="bundle generation network: pointer decoder, diversity-penalised beam search (Bai et al. 2019)"))
