"""The study configs under configs/<domain>/studies/: the generator script is their one source,
and every key in them is one a run accepts (a typo would only surface hours into a queue)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from recbole_bundlellm.config import check_keys, check_numeric_settings, known_config_keys
from recbole_bundlellm.testing import plugin_host

REPO = Path(__file__).resolve().parents[1]
STUDY_CONFIGS = sorted(REPO.glob("configs/*/studies/**/*.yaml"))


def _generator():
    spec = importlib.util.spec_from_file_location("make_study_configs", REPO / "scripts" / "make_study_configs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_study_configs_are_what_the_generator_writes():
    written = _generator().study_files()
    stale = [str(p.relative_to(REPO)) for p, text in written.items()
             if not p.exists() or p.read_text(encoding="utf-8") != text]
    assert not stale, f"run `python scripts/make_study_configs.py` (edit the script, not the files): {stale}"


@pytest.fixture(scope="module")
def known():
    host = plugin_host()
    return host, known_config_keys(host)


@pytest.mark.parametrize("path", STUDY_CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_study_config_uses_only_known_keys(path, known):
    host, keys = known
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    check_keys(values, keys, str(path), host)
    check_numeric_settings(values)
    assert values["output_dir"].startswith(f"outputs/{values['dataset']}/studies/")
