"""Loading the student LLM (embedded SmolLM2 GGUF, any local GGUF, or a local HF folder)."""

from recbole_bundlellm.llm.loading import (
    EMBEDDED,
    LLMLoadError,
    LoadedLLM,
    cache_root,
    clear_llm_cache,
    convert_gguf,
    embedded_gguf_path,
    gguf_content_key,
    load_llm,
    model_content_hash,
    resolve_device_dtype,
    resolve_model_folder,
)

__all__ = [
    "EMBEDDED",
    "LLMLoadError",
    "LoadedLLM",
    "cache_root",
    "clear_llm_cache",
    "convert_gguf",
    "embedded_gguf_path",
    "gguf_content_key",
    "load_llm",
    "model_content_hash",
    "resolve_device_dtype",
    "resolve_model_folder",
]
