"""Shared fixtures. Every test runs in its own temporary working directory with a clean argv,
because RecBole writes ./log* into the working directory and reads --key=value from sys.argv."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

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
