"""Adaptation: how the student takes in distilled knowledge (in-context, fine-tuning, or both).

The contract strategies implement (:mod:`.strategy`), registered through the
``register_adaptation_strategies`` hook; the retrieval of similar sessions and fitting knowledge
they build views from (:mod:`.retrieval`); and the student's knowledge set, rebuilt from the
distillation's store (:mod:`.knowledge_source`); and the training mechanism they rely on (LoRA
adapters, training checkpoints) that any model can use.
"""

from recbole_bundlellm.adaptation.knowledge_source import KnowledgeSourceError, load_student_knowledge
from recbole_bundlellm.adaptation.retrieval import SessionRetriever
from recbole_bundlellm.adaptation.strategy import (
    EXAMPLE,
    AdaptationContext,
    AdaptationStrategy,
    Embedder,
    PromptMeasure,
    Retrieved,
    StudentView,
    fit_budget,
)

__all__ = ["EXAMPLE", "AdaptationContext", "AdaptationStrategy", "Embedder", "KnowledgeSourceError",
           "PromptMeasure", "Retrieved", "SessionRetriever", "StudentView", "fit_budget", "load_student_knowledge"]
