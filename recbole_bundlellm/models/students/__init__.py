"""The LLM students (BundleLLM prompted, BundleSFT fine-tuned, RouteDK mixing LoRA experts) and the
teacher prompted as a student (TeacherLLM)."""
