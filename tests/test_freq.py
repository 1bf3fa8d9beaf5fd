"""Freq on hand-built data with a known answer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.knowledge.frequent_patterns import (
    FREQ_DEFAULTS,
    bundle_by_patterns,
    mine_patterns,
)
from recbole_bundlellm.models.baselines.freq import Freq, mining_settings

TRAIN = [
    ["Shirts", "Ties"], ["Shirts", "Ties"], ["Shirts", "Ties", "Cufflinks"],
    ["Shoes", "Socks"], ["Shoes", "Socks"], ["Hats", "Scarves"],
]


def test_patterns_are_ranked_by_support_then_size():
    patterns = mine_patterns(TRAIN, min_support=0.3, min_confidence=0.0, min_size=2, max_size=5)
    assert [sorted(p.categories) for p in patterns] == [["Shirts", "Ties"], ["Shoes", "Socks"]]
    assert patterns[0].support == pytest.approx(3 / 6)
    assert patterns[1].support == pytest.approx(2 / 6)
    assert patterns[0].confidence == pytest.approx(1.0)


def test_min_size_max_size_and_confidence_filter_patterns():
    all_ = mine_patterns(TRAIN, min_support=0.1, min_confidence=0.0, min_size=2, max_size=5)
    assert frozenset({"Shirts", "Ties", "Cufflinks"}) in {p.categories for p in all_}
    capped = mine_patterns(TRAIN, min_support=0.1, min_confidence=0.0, min_size=2, max_size=2)
    assert max(len(p.categories) for p in capped) == 2
    # Shirts->Cufflinks holds in 1 of 3 Shirts bundles, Cufflinks->Shirts in 1 of 1: kept at 1.0
    strict = mine_patterns(TRAIN, min_support=0.1, min_confidence=1.01, min_size=2, max_size=5)
    assert strict == []


def test_session_items_are_grouped_by_the_best_matching_patterns():
    patterns = mine_patterns(TRAIN, min_support=0.1, min_confidence=0.0, min_size=2, max_size=5)
    # two shirts and a tie form one bundle; shoes+socks another; the lone hat matches nothing
    categories = ["Shirts", "Shoes", "Ties", "Hats", "Socks", "Shirts"]
    assert bundle_by_patterns(categories, patterns) == [(0, 2, 5), (1, 4)]
    assert bundle_by_patterns(["Hats", "Shoes"], patterns) == []


class _Config(dict):
    pass


def test_freq_model_fits_on_bundles_and_returns_item_ids():
    config = _Config(device="cpu", freq_min_support=0.1, freq_min_confidence=0.0, freq_min_size=2, freq_max_size=5)
    model = Freq(config, dataset=None)
    train = [
        Session(str(k), tuple(f"i{k}{j}" for j in range(len(cats))), tuple(cats), tuple(cats),
                (frozenset(f"i{k}{j}" for j in range(len(cats))),))
        for k, cats in enumerate(TRAIN)
    ]
    model.fit_bundles(train)
    test = Session("t", ("a", "b", "c", "d"), ("", "", "", ""), ("Ties", "Hats", "Shirts", "Scarves"))
    (pred,) = model.generate_bundles([test])
    assert pred.bundles == [("a", "c"), ("b", "d")]
    (none,) = model.generate_bundles([Session("u", ("x", "y"), ("", ""), ("Hats", "Shoes"))])
    assert none.bundles == [] and "no frequent pattern" in none.failure


def test_freq_yaml_states_the_shared_mining_defaults():
    # The difficulty fallback mines with FREQ_DEFAULTS; Freq with its YAML: they must not drift.
    import recbole_bundlellm.models.baselines.freq as freq_module

    raw = yaml.safe_load((Path(freq_module.__file__).parent / "Freq.yaml").read_text(encoding="utf-8"))
    assert mining_settings(raw) == FREQ_DEFAULTS
    assert [type(v) for v in (raw["freq_min_support"], raw["freq_min_confidence"])] == [float, float]
    assert [type(v) for v in (raw["freq_min_size"], raw["freq_max_size"])] == [int, int]


def test_frequent_patterns_imports_no_model_code_nor_mlxtend_until_mining():
    code = ("import sys\n"
            "from recbole_bundlellm.knowledge.frequent_patterns import mine_patterns\n"
            "heavy = lambda: sorted({m.split('.')[0] for m in sys.modules} & {'mlxtend', 'pandas', 'recbole'})\n"
            "print(heavy(), sorted(m for m in sys.modules if m.startswith('recbole_bundlellm.models')))\n"
            "mine_patterns([['a', 'b']], min_support=0.5, min_confidence=0.0, min_size=2, max_size=2)\n"
            "print(heavy())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = done.stdout.splitlines()
    assert before == "[] []"
    assert "'mlxtend'" in after
