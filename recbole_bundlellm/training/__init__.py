"""Training: RecBole trainers for bundle models (:mod:`.trainer`: generation + RecBole's Evaluator;
:mod:`.neural_trainer`: gradient descent for the classical baselines; :mod:`.sft_trainer`: LoRA
fine-tuning of the student) and :mod:`.distributed` (torchrun / DDP helpers)."""
