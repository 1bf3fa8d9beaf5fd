"""Load the student LLM: the embedded SmolLM2 GGUF, another local GGUF, or a local HF folder.

recbole_bundlellm never downloads models. A GGUF is converted once into a plain Hugging Face
folder (safetensors + config + tokenizer) under a cache directory keyed by the file's content,
because dequantizing a GGUF takes ~20 s while reloading the saved folder takes well under one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recbole_bundlellm.embedded import cache_root, embedded_gguf_path
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.fileio import atomic_write_text, file_lock, replace_folder, sha256_file
from recbole_bundlellm.llm.scaling import check_attention, four_bit_config
from recbole_bundlellm.progress import progress_enabled

# Read by huggingface_hub when it is first imported: set before transformers can be imported
# through this module, so nothing can silently reach the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

logger = logging.getLogger(__name__)

EMBEDDED = "embedded"
# Part of the converted folder's name: bump it when the conversion output changes, so caches
# written by an older version are not reused.
_CONVERT_FORMAT = "v1"
_EXPECTED = ("expected 'embedded', a local Hugging Face model folder (with config.json) or a .gguf file; "
             "recbole_bundlellm never downloads models")
#: Every GGUF file starts with these four bytes.
_GGUF_MAGIC = b"GGUF"

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


class LLMLoadError(BundleLLMError, ValueError):
    """A student LLM source (``llm_model``), device or dtype that cannot be used as given."""


# --------------------------------------------------------------------------- paths


def _converted_dir(cache_dir: Path | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "llm"


# --------------------------------------------------------------------------- GGUF conversion


def gguf_content_key(gguf_path: Path, cache_dir: Path | None = None) -> str:
    """sha256 of a GGUF file, remembered per (path, size, mtime) so it is hashed only once."""
    gguf_path = Path(gguf_path).resolve()
    stat = gguf_path.stat()
    fast = hashlib.sha1(f"{gguf_path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    index = _converted_dir(cache_dir) / "index" / f"{fast}.sha256"
    if index.is_file():
        return index.read_text().strip()
    key = sha256_file(gguf_path)
    index.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(index, key + "\n")
    return key


def model_content_hash(folder: Path, cache_dir: Path | None = None) -> str:
    """sha256 over a model folder's config and weight files (names and contents), remembered per
    (path, size, mtime) of those files so it is computed once. Adapters record it: an adapter
    trained on other weights is refused, whatever the folder is called."""
    folder = Path(folder).resolve()
    files = sorted(p for p in folder.iterdir() if p.is_file() and (
        p.name == "config.json" or p.suffix in (".safetensors", ".bin")))
    if not files:
        raise LLMLoadError(f"{folder} holds no config.json or weight files")
    stamp = "|".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    fast = hashlib.sha1(f"{folder}|{stamp}".encode()).hexdigest()
    index = _converted_dir(cache_dir) / "index" / f"model-{fast}.sha256"
    if index.is_file():
        return index.read_text().strip()
    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{p.name}:{sha256_file(p)}\n".encode())
    key = digest.hexdigest()
    index.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(index, key + "\n")
    return key


def _dequantize_to_folder(gguf_path: Path, out_dir: Path) -> None:
    """Load a GGUF densely with transformers and save it as a plain HF folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    _quiet_transformers_bars()
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    # dequantize=True: with the `kernels` package installed transformers would otherwise keep
    # the weights in GGUF blocks, which cannot be saved or trained.
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        gguf_file=name,
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.float32,
        local_files_only=True,
    )
    # The weights are dense now, but the model still carries the GGUF quantizer, which refuses
    # save_pretrained and training; dropping it makes this an ordinary float model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = gguf_path.stem
    if tokenizer.model_max_length > 10**9:  # GGUF tokenizers come with "no limit"
        tokenizer.model_max_length = model.config.max_position_embeddings
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def convert_gguf(gguf_path: Path, cache_dir: Path | None = None) -> Path:
    """Convert a GGUF file into a cached HF folder (once per file content) and return the folder.

    Safe against concurrent callers: a lock serialises converters of the same file, and the
    folder appears only by renaming a finished temporary directory.
    """
    gguf_path = Path(gguf_path).expanduser().resolve()
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    root = _converted_dir(cache_dir)
    key = f"{gguf_content_key(gguf_path, cache_dir)[:24]}-{_CONVERT_FORMAT}"
    target = root / f"gguf-{key}"
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f".gguf-{key}.lock"):
        if (target / "config.json").is_file():  # another process finished while we waited
            return target
        for stale in root.glob(f".tmp-gguf-{key}-*"):  # left by a killed converter
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".tmp-gguf-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        start = time.perf_counter()
        try:
            _dequantize_to_folder(gguf_path, tmp)
            seconds = time.perf_counter() - start
            info = {"gguf": str(gguf_path), "key": key, "convert_seconds": round(seconds, 2)}
            (tmp / "bundlellm_source.json").write_text(json.dumps(info, indent=2))
            # keep_existing: someone without the lock (e.g. no fcntl) may have got there first
            if not replace_folder(tmp, target, keep_existing=True) and not (target / "config.json").is_file():
                raise FileExistsError(f"{target} exists but holds no converted model")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converted %s to %s in %.1f s", gguf_path.name, target, seconds)
    return target


# --------------------------------------------------------------------------- device / dtype


def _resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise LLMLoadError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from error
    if resolved.type == "cpu":
        return resolved
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise LLMLoadError(f"device {device!r} asked for, but CUDA is not available here")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise LLMLoadError(
                f"device {device!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return resolved
    if resolved.type == "mps" and torch.backends.mps.is_available():
        return resolved
    raise LLMLoadError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")


def _cuda_bf16(device: torch.device) -> bool:
    try:
        return bool(torch.cuda.is_bf16_supported())
    except Exception:  # noqa: BLE001 - older drivers raise instead of answering
        return False


def resolve_device_dtype(
    device: str | torch.device = "auto", dtype: str | torch.dtype = "auto"
) -> tuple[torch.device, torch.dtype]:
    """Turn user settings into a concrete (device, dtype).

    ``auto`` device: CUDA when available, else CPU. ``auto`` dtype: bfloat16 on a GPU that
    supports it, float32 otherwise (float16 is never chosen silently: it overflows in training).
    """
    resolved_device = _resolve_device(device)
    if isinstance(dtype, torch.dtype):
        if dtype not in set(_DTYPES.values()):
            raise LLMLoadError(f"unsupported dtype {dtype}; use float32, bfloat16 or float16")
        return resolved_device, dtype
    name = str(dtype).strip().lower().removeprefix("torch.")
    if name == "auto":
        if resolved_device.type == "cuda" and _cuda_bf16(resolved_device):
            return resolved_device, torch.bfloat16
        return resolved_device, torch.float32
    if name not in _DTYPES:
        raise LLMLoadError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return resolved_device, _DTYPES[name]


# --------------------------------------------------------------------------- loading


@dataclass
class LoadedLLM:
    """A loaded causal LM with its tokenizer and where it came from."""

    model: Any
    tokenizer: Any
    source: str
    path: Path
    device: torch.device
    dtype: torch.dtype
    load_seconds: float


_CACHE: dict[tuple[str, ...], LoadedLLM] = {}
_CACHE_LOCK = threading.Lock()


def clear_llm_cache() -> None:
    """Forget every model held by the in-process cache (they are freed once unreferenced)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def resolve_model_folder(source: str | os.PathLike[str] = EMBEDDED, cache_dir: Path | None = None) -> Path:
    """The local HF folder ``source`` names, converting a GGUF first if needed."""
    if str(source) == EMBEDDED:
        return convert_gguf(embedded_gguf_path(), cache_dir)
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LLMLoadError(f"cannot load the LLM {str(source)!r}: it is a folder without config.json, "
                               f"not a model folder; {_EXPECTED}")
        _refuse_custom_code(path)
        return path.resolve()
    if not path.exists():
        raise LLMLoadError(f"cannot load the LLM {str(source)!r}: not found: {_EXPECTED}")
    if path.suffix.lower() != ".gguf":
        raise LLMLoadError(f"cannot load the LLM {str(source)!r}: it is a file but not a .gguf file; {_EXPECTED}")
    _check_gguf_magic(path)
    return convert_gguf(path, cache_dir)


def _refuse_custom_code(folder: Path) -> None:
    """Refuse a folder whose ``config.json`` asks for the model's own Python code (``auto_map``):
    this project never runs code shipped with a model (``trust_remote_code``)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LLMLoadError(f"cannot load the LLM {str(folder)!r}: its config.json cannot be read ({exc})") from None
    if isinstance(config, dict) and config.get("auto_map"):
        raise LLMLoadError(f"cannot load the LLM {str(folder)!r}: its config.json asks for the model's own code "
                           "(auto_map), and this project never runs code shipped with a model; use a model whose "
                           "architecture transformers has built in")


def _check_gguf_magic(path: Path) -> None:
    """Refuse a ``.gguf`` that is none (transformers would fail deep inside its reader)."""
    with open(path, "rb") as f:
        if f.read(len(_GGUF_MAGIC)) != _GGUF_MAGIC:
            raise LLMLoadError(f"cannot load the LLM {str(path)!r}: it is not a GGUF file (it does not start "
                               "with the GGUF magic bytes); expected a llama.cpp .gguf model file")


def _prepare_tokenizer(tokenizer: Any) -> Any:
    # Decoder-only batched generation needs the real tokens flush against the new ones.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _quiet_transformers_bars() -> None:
    """transformers draws a "Loading weights" bar on every load; keep it off logs that are not a
    terminal (our own bars follow the same rule, see ``progress.py``)."""
    from transformers.utils import logging as hf_logging

    if progress_enabled():
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()


def _load_folder(folder: Path, device: torch.device, dtype: torch.dtype, attn_implementation: str | None = None,
                 load_in_4bit: bool = False) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers_bars()
    tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(folder, local_files_only=True))
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if attn_implementation is not None:  # otherwise transformers' default (sdpa where supported)
        kwargs["attn_implementation"] = attn_implementation
    if load_in_4bit:
        # bitsandbytes places the quantised weights itself; a 4-bit model refuses .to(device).
        kwargs.update(quantization_config=four_bit_config(device, dtype), device_map={"": device})
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    if not load_in_4bit:
        model.to(device)
    model.eval()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_llm(
    source: str | os.PathLike[str] = EMBEDDED,
    *,
    device: str = "auto",
    dtype: str = "auto",
    cache_dir: Path | None = None,
    use_cache: bool = True,
    attn_implementation: str | None = None,
    load_in_4bit: bool = False,
) -> LoadedLLM:
    """Load a causal LM and tokenizer from ``"embedded"``, a local HF folder or a ``.gguf`` file.

    The result is cached in-process by (folder, device, dtype), so later calls share one model.
    Pass ``use_cache=False`` to get a private copy, e.g. before wrapping it with LoRA adapters,
    which modify the model in place. ``attn_implementation`` (``None``: transformers' default) and
    ``load_in_4bit`` (QLoRA's NF4 weights; CUDA and bitsandbytes only) are checked against the
    device before anything is read (:mod:`recbole_bundlellm.llm.scaling`).
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a string or path, not {type(source).__name__}")
    resolved_device, resolved_dtype = resolve_device_dtype(device, dtype)
    attn_implementation = check_attention(attn_implementation, resolved_device, resolved_dtype)
    if load_in_4bit:
        four_bit_config(resolved_device, resolved_dtype)  # refused before a GGUF is converted
    folder = resolve_model_folder(source, cache_dir)
    key = (str(folder), str(resolved_device), str(resolved_dtype), str(attn_implementation), str(bool(load_in_4bit)))
    if use_cache:
        with _CACHE_LOCK:
            if key in _CACHE:
                return _CACHE[key]
    start = time.perf_counter()
    model, tokenizer = _load_folder(folder, resolved_device, resolved_dtype, attn_implementation, load_in_4bit)
    if use_cache:
        # Shared by every model of the process: read-only. A model that trains asks for its own copy.
        model.requires_grad_(False)
    loaded = LoadedLLM(
        model=model,
        tokenizer=tokenizer,
        source=str(source),
        path=folder,
        device=resolved_device,
        dtype=resolved_dtype,
        load_seconds=time.perf_counter() - start,
    )
    logger.info(
        "loaded %s (%s) on %s as %s in %.2f s",
        source, folder, resolved_device, resolved_dtype, loaded.load_seconds,
    )
    if use_cache:
        with _CACHE_LOCK:
            # Two threads may have raced; keep the first so every caller shares one object.
            loaded = _CACHE.setdefault(key, loaded)
    return loaded
