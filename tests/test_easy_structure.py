"""The student learns an easy bundle structure: on a generated dataset whose bundles follow a few
obvious category patterns (``recbole_bundlellm.testing.easy_data``), a short PairSFT run of the
real embedded student beats every label-free floor by a wide margin.

A student that labels products by position or answers the whole session cannot pass this, so
this test guards the training path itself (data, labels, loss, the pass that reads the products,
grouping): it is the check that failed for the generated tags answers (exact F1 0.067).
"""

from __future__ import annotations

import pytest

from recbole_bundlellm.models.floors.floor import FLOOR_RULES
from recbole_bundlellm.commands.runner import run
from recbole_bundlellm.testing.easy_data import EASY_DOMAIN, prepare_easy_data


@pytest.mark.slow
def test_a_short_student_run_beats_every_floor_on_easy_data_by_a_wide_margin(tmp_path):
    data = prepare_easy_data(tmp_path / "easy", sessions=150)
    common = {"data_path": str(data)}
    floors = {rule: run("Floor", EASY_DOMAIN, output_dir=f"floor-{rule}", config_dict={**common, "floor_rule": rule})
              for rule in FLOOR_RULES}
    student = run("PairSFT", EASY_DOMAIN, output_dir="student", config_dict={
        **common, "adaptation": "sft", "epochs": 1})
    best_f1 = max(f.test_result["exactf1"] for f in floors.values())
    best_jaccard = max(f.test_result["bestjaccard"] for f in floors.values())
    scores = student.test_result
    assert scores["exactf1"] >= best_f1 + 0.3, (scores, best_f1)
    assert scores["bestjaccard"] >= best_jaccard + 0.15, (scores, best_jaccard)
    assert scores["wholesessionshare"] < 0.2  # not the collapse onto one bundle of everything
