"""Plugin ``models``: the built-in bundle models (Freq, BundleLLM, BundleSFT, PairSFT, RouteDK, PairRouteDK, Floor,
Pairwise, RecBoleBundler, TeacherLLM and the classical baselines BBPR, POG, BGN)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from recbole_bundlellm.extension.hookspecs import hookimpl
from recbole_bundlellm.extension.registry import ModelSpec

#: Each model's YAML sits beside its module, in its family's folder of ``recbole_bundlellm/models/``.
_MODELS = Path(__import__("recbole_bundlellm").__file__).resolve().parent / "models"
_FLOORS, _BASELINES, _STUDENTS = _MODELS / "floors", _MODELS / "baselines", _MODELS / "students"
_TRAINER = "recbole_bundlellm.training.trainer:BundleTrainer"
_NEURAL = "recbole_bundlellm.training.neural_trainer:NeuralBundleTrainer"


@hookimpl
def register_models(register: Callable[[ModelSpec], None]) -> None:
    register(ModelSpec("Freq", "recbole_bundlellm.models.baselines.freq:Freq", (_BASELINES / "Freq.yaml",), _TRAINER,
                       description="frequent category patterns of training bundles (mlxtend Apriori)"))
    register(ModelSpec("BundleLLM", "recbole_bundlellm.models.students.bundlellm:BundleLLM", (_STUDENTS / "BundleLLM.yaml",),
                       _TRAINER, description="student LLM prompted: zero-/one-shot, or icl (retrieved examples and knowledge)"))
    register(ModelSpec("BundleSFT", "recbole_bundlellm.models.students.bundle_sft:BundleSFT",
                       (_STUDENTS / "BundleLLM.yaml", _STUDENTS / "BundleSFT.yaml"), "recbole_bundlellm.training.sft_trainer:SFTTrainer",
                       description="student LLM fine-tuned with LoRA on sessions and their knowledge (sft / icl_sft)"))
    register(ModelSpec("PairSFT", "recbole_bundlellm.models.students.pair_sft:PairSFT",
                       (_STUDENTS / "BundleLLM.yaml", _STUDENTS / "BundleSFT.yaml", _STUDENTS / "PairSFT.yaml"),
                       "recbole_bundlellm.training.sft_trainer:SFTTrainer",
                       description="student LLM scoring product pairs from its hidden states (LoRA + pair head), grouped as Pairwise"))
    register(ModelSpec("RouteDK", "recbole_bundlellm.models.students.route_dk:RouteDK",
                       (_STUDENTS / "BundleLLM.yaml", _STUDENTS / "BundleSFT.yaml", _STUDENTS / "RouteDK.yaml"),
                       "recbole_bundlellm.training.sft_trainer:SFTTrainer",
                       description="RouteDK: frozen LoRA experts (base, rules, thoughts, ...) mixed per input by a learned router"))
    register(ModelSpec("PairRouteDK", "recbole_bundlellm.models.students.pair_route_dk:PairRouteDK",
                       (_STUDENTS / "BundleLLM.yaml", _STUDENTS / "BundleSFT.yaml", _STUDENTS / "PairSFT.yaml",
                        _STUDENTS / "RouteDK.yaml", _STUDENTS / "PairRouteDK.yaml"),
                       "recbole_bundlellm.training.sft_trainer:SFTTrainer",
                       description="RouteDK over PairSFT experts: their adapters and pair heads mixed per input by a learned router"))
    register(ModelSpec("Floor", "recbole_bundlellm.models.floors.floor:Floor", (_FLOORS / "Floor.yaml",), _TRAINER,
                       description="label-free floors: whole session, first two, adjacent or random pairs"))
    register(ModelSpec("Pairwise", "recbole_bundlellm.models.baselines.pairwise:Pairwise", (_BASELINES / "Pairwise.yaml",),
                       _TRAINER, description="learned same-bundle pair classifier + grouping tuned on valid (no LLM)"))
    register(ModelSpec("TeacherLLM", "recbole_bundlellm.models.students.teacher_llm:TeacherLLM", (_STUDENTS / "TeacherLLM.yaml",),
                       _TRAINER, description="the teacher endpoint prompted as the student (calls cached in knowledge_dir)"))
    register(ModelSpec("POG", "recbole_bundlellm.models.baselines.pog:POG", (_BASELINES / "NeuralBundle.yaml", _BASELINES / "POG.yaml"),
                       _NEURAL, description="transformer encoder over the session + pointer decoder generating its bundles (POG, KDD 2019)"))
    register(ModelSpec("BBPR", "recbole_bundlellm.models.baselines.bbpr:BBPR", (_BASELINES / "NeuralBundle.yaml", _BASELINES / "BBPR.yaml"),
                       _NEURAL, description="bundle BPR on title/category item encodings + greedy bundle construction (Pathak et al. 2017)"))
    register(ModelSpec("RecBoleBundler", "recbole_bundlellm.models.baselines.recbole_bundler:RecBoleBundler",
                       (_BASELINES / "RecBoleBundler.yaml",), _TRAINER,
                       description="any RecBole item-scoring model's item affinity + grouping tuned on valid (no LLM)"))
    register(ModelSpec("BGN", "recbole_bundlellm.models.baselines.bgn:BGN", (_BASELINES / "NeuralBundle.yaml", _BASELINES / "BGN.yaml"),
                       _NEURAL, description="bundle generation network: pointer decoder, diversity-penalised beam search (Bai et al. 2019)"))
