"""Adaptation: how the student takes in distilled knowledge (in-context, fine-tuning, or both).

The contract strategies implement (:mod:`.strategy`), registered through the
``register_adaptation_strategies`` hook, and the training mechanism they rely on (LoRA adapters,
training checkpoints) that any model can use.
"""

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

__all__ = ["EXAMPLE", "AdaptationContext", "AdaptationStrategy", "Embedder", "PromptMeasure", "Retrieved",
           "StudentView", "fit_budget"]
