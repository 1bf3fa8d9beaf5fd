"""Shared fixtures. Every test runs in its own temporary working directory with a clean argv,
because RecBole writes ./log* into the working directory and reads --key=value from sys.argv."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The real teacher server and the fault proxy (tests/teacher_fixtures.py).
pytest_plugins = ["teacher_fixtures"]

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(autouse=True)
def _isolated_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    yield


@pytest.fixture(scope="session")
def raw_data_root() -> Path:
    """The raw SIGIR 2022 files (../shared/data/bundle or $BUNDLELLM_RAW_DATA).

    Skipped when absent, unless BUNDLELLM_REQUIRE_DATA=1 (CI sets it), which makes it an error.
    """
    root = Path(os.environ.get("BUNDLELLM_RAW_DATA", REPO.parent / "shared" / "data" / "bundle"))
    if not (root / "electronic" / "session_item.csv").is_file():
        if os.environ.get("BUNDLELLM_REQUIRE_DATA") == "1":
            raise FileNotFoundError(f"raw bundle data not found under {root}")
        pytest.skip(f"raw bundle data not found under {root}")
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The hand-built tiny raw dataset (shaped as 'clothing') prepared into atomic files."""
    from recbole_bundlellm.data import prepare_domain

    out = tmp_path_factory.mktemp("tiny_prepared")
    prepare_domain(FIXTURES / "tiny_raw", out, "clothing", seed=0)
    return out


@pytest.fixture(scope="session")
def electronic_data(raw_data_root, tmp_path_factory) -> Path:
    """The real Electronic dataset prepared into atomic files (a few seconds)."""
    from recbole_bundlellm.data import prepare_domain

    out = tmp_path_factory.mktemp("electronic_prepared")
    prepare_domain(raw_data_root, out, "electronic")
    return out


@pytest.fixture(scope="session")
def tiny_patterns(tiny_data, tmp_path_factory):
    """``min_count -> settings`` of a run whose prompts hold the tiny data's category patterns
    (``knowledge_dir``, ``knowledge_use``...), distilled once per ``min_count`` (no teacher)."""
    from recbole_bundlellm.commands.distill import distill

    made: dict[int, dict] = {}

    def settings(min_count: int = 1) -> dict:
        if min_count not in made:
            keys = {"data_path": str(tiny_data), "knowledge_dir": str(tmp_path_factory.mktemp("kn")),
                    "patterns": {"min_count": min_count}}
            distill([], {"dataset": "clothing", "knowledge_types": ["patterns"], **keys})
            made[min_count] = {**keys, "knowledge_use": ["patterns"]}
        return dict(made[min_count])

    return settings


@pytest.fixture(scope="session")
def tiny_llm_path(tmp_path_factory) -> Path:
    """A tiny random Llama with a locally built tokenizer (no downloads)."""
    from tiny_llm import make_tiny_llm

    return make_tiny_llm(tmp_path_factory.mktemp("tiny_llm") / "model")


@pytest.fixture
def one_torch_thread():
    """One torch thread for the tests of the small trained baselines: their tensors are tiny, so
    one thread is as fast alone, and several spin against each other on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
