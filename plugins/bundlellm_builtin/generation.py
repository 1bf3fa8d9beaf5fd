"""Plugin ``generation``: the built-in generation backends ``transformers`` and ``openai``.

- ``transformers``: the student's weights in this process (batched, seeded samples, stop strings,
  logit biases, RouteDK's per-input experts); the default, and the only one the models that train
  the student or read its hidden states (BundleSFT, PairSFT, RouteDK) accept;
- ``openai``: the student served by an OpenAI-compatible server (vLLM with a LoRA adapter by
  name, TGI, SGLang, llama.cpp's server), its answers cached beside the run so a killed run resumes.
"""

from __future__ import annotations

from collections.abc import Callable

from recbole_bundlellm.extension.hookspecs import hookimpl
from recbole_bundlellm.generation.backend import GenerationBackend
from recbole_bundlellm.generation.openai_backend import OpenAIBackend
from recbole_bundlellm.generation.transformers_backend import TransformersBackend


@hookimpl
def register_generation_backends(register: Callable[[type[GenerationBackend]], None]) -> None:
    register(TransformersBackend)
    register(OpenAIBackend)
