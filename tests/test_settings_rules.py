"""One settings path: every setting's allowed values are one rule (recbole_bundlellm/rules.py), in
``properties/ranges.yaml`` for the models' flat keys or a ``ranged`` field of a settings dataclass,
checked by one checker with one message format (``key must be <allowed>; got <value>``)."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from recbole_bundlellm.rules import RANGES, is_allowed, load_rules, rule_error
from recbole_bundlellm.settings import SettingsError, check_fields, check_row, load_settings, ranged

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "recbole_bundlellm" / "models"

#: Enumerated keys (``(str) a | b`` in their YAML) without a ``choices`` row yet, and why.
NOT_RULED = {
    # Open sets: a registered plugin component, or a device string (cuda:N).
    "adaptation": "a registered strategy (plugin host)",
    "fusion_router": "a registered router (plugin host)",
    "llm_device": "auto | cpu | cuda | cuda:N (llm/ loading)",
    # Checked where they are used, not moved in this step (one check each, not two).
    "floor_rule": "models/floors/floor.py",
    "bundler_affinity": "models/baselines/recbole_bundler.py",
    "bundler_unseen": "models/baselines/recbole_bundler.py",
    "bundler_scale": "models/baselines/recbole_bundler.py",
    "prompt_format": "generation/prompt.py",
    "prompt_mode": "models/students/bundlellm.py",
    "answer_order": "models/students/bundle_sft.py",
    "label_weighting": "models/students/bundle_sft.py",
    "lr_schedule": "training/sft_trainer.py",
    "llm_dtype": "llm/ loading",
    "routing_pooling": "fusion/representation.py",
}
_ENUM_LINE = re.compile(r"^(\w+):\s*\S+\s*#\s*\(str\)[^\n]*\|")


def _yaml_files() -> list[Path]:
    return sorted(MODELS.rglob("*.yaml")) + [REPO / "recbole_bundlellm" / "properties" / "overall.yaml"]


def _enumerated_keys() -> set[str]:
    """Keys whose YAML comment lists alternatives: ``key: a  # (str) a | b``."""
    return {m.group(1) for path in _yaml_files() for line in path.read_text(encoding="utf-8").splitlines()
            if (m := _ENUM_LINE.match(line))}


def test_every_enumerated_default_has_a_choices_row_and_fits_it():
    enumerated = _enumerated_keys()
    assert {"pog_fallback", "bbpr_context", "pairwise_grouping", "pair_pooling", "pog_train_categories"} <= enumerated
    missing = sorted(k for k in enumerated - set(NOT_RULED) if "choices" not in RANGES.get(k, {}))
    assert not missing, f"give these a choices row in ranges.yaml (or a reason in NOT_RULED): {missing}"
    assert not set(NOT_RULED) & set(RANGES), "a key in NOT_RULED has a row now: drop it from NOT_RULED"
    assert set(NOT_RULED) <= enumerated, "NOT_RULED names a key that is gone"


def test_every_default_with_a_row_fits_it():
    for path in _yaml_files():
        for key, value in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).items():
            if key in RANGES:
                check_row(key, value)  # the shipped defaults (lists and strings too) are valid


def test_choices_rows_agree_with_the_code_that_uses_them():
    from recbole_bundlellm.models.baselines.pairwise import FALLBACKS, GROUPINGS

    for key in ("pairwise_grouping", "bundler_grouping"):
        assert tuple(RANGES[key]["choices"]) == GROUPINGS
    for key in ("pairwise_fallback", "bundler_fallback", "bbpr_fallback"):
        assert tuple(RANGES[key]["choices"]) == FALLBACKS
    assert set(RANGES["pog_fallback"]["choices"]) < set(FALLBACKS)


# --------------------------------------------------------------------------- one check per key


def test_a_key_given_twice_in_the_table_is_an_error():
    with pytest.raises(ValueError, match="epochs: given more than once"):
        load_rules("epochs: {type: int, min: 1}\nseed: {type: int}\nepochs: {type: int, min: 0}\n")
    with pytest.raises(ValueError, match="unknown field"):
        load_rules("epochs: {type: int, minimum: 1}\n")
    with pytest.raises(ValueError, match="empty_means needs list: only"):
        load_rules("grid: {type: float, empty_means: none}\n")


def _raises_naming_a_row(path: Path) -> list[str]:
    """``raise ...("<row key> ... must be / is not one of ...")`` outside a ``validate*`` function:
    a second, hand-written check of a key's values (a check against the loaded model, such as
    ``max_seq_tokens`` above its context, is no rule of the key and is not matched)."""
    found = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args \
                and not function.startswith("validate"):
            first = node.exc.args[0]
            text = first.value if isinstance(first, ast.Constant) else (
                first.values[0].value if isinstance(first, ast.JoinedStr) and first.values
                and isinstance(first.values[0], ast.Constant) else "")
            word = re.match(r"'?(\w+)", str(text))
            pieces = " ".join(v.value for v in ast.walk(first) if isinstance(v, ast.Constant) and isinstance(v.value, str))
            if word and word.group(1) in RANGES and re.search(r"must be|not one of|not within|at least", pieces):
                found.append(f"{path.relative_to(REPO)}:{node.lineno} ({word.group(1)})")
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(path.read_text(encoding="utf-8")), "")
    return found


def test_no_key_with_a_row_is_checked_a_second_time_by_hand():
    paths = [*MODELS.rglob("*.py"), *(REPO / "plugins").rglob("*.py"),
             REPO / "recbole_bundlellm" / "generation" / "generator.py", REPO / "recbole_bundlellm" / "fusion" / "vote.py"]
    found = [hit for path in paths for hit in _raises_naming_a_row(path)]
    assert not found, "use check_row / check_rows (or a validate_settings for several keys):\n" + "\n".join(found)


def test_the_per_model_helpers_are_gone():
    for name in ("bgn.py", "pog.py", "bbpr.py"):
        source = (MODELS / "baselines" / name).read_text(encoding="utf-8")
        assert not re.search(r"def _(positive_int|non_negative|probability|float_list)\b", source), name


# --------------------------------------------------------------------------- the errors


def _defaults(model: str, **overrides: object) -> dict:
    """NeuralBundle.yaml + the model's YAML as a plain config mapping (as the models' tests build it)."""
    config: dict = {"seed": 0}
    for name in ("NeuralBundle.yaml", f"{model}.yaml"):
        config.update(yaml.safe_load((MODELS / "baselines" / name).read_text(encoding="utf-8")))
    return {**config, **overrides}


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_a_bgn_key_out_of_range_is_one_line_naming_key_allowed_and_value():
    from recbole_bundlellm.models.baselines.bgn import BGN

    with pytest.raises(SettingsError) as exc:
        BGN(_defaults("BGN", bgn_beam_size=0), None)
    assert _one_line(exc) == "bgn_beam_size must be an integer >= 1; got 0"
    with pytest.raises(SettingsError) as exc:
        BGN(_defaults("BGN", bgn_tune_stop_probabilities=[0.5, 0]), None)
    assert _one_line(exc) == ("bgn_tune_stop_probabilities must be a list, each a number > 0 and <= 1 "
                              "([] or ~ for no grid (bgn_tune false)); got [0.5, 0]")


def test_a_pog_choice_is_checked_by_its_row_in_the_config_and_in_the_model(tiny_data):
    from recbole_bundlellm.config import BundleConfig
    from recbole_bundlellm.models.baselines.pog import POG

    expected = "pog_fallback must be one of 'whole', 'none'; got 'pair'"
    with pytest.raises(SettingsError) as exc:
        BundleConfig("POG", "clothing", config_dict={"data_path": str(tiny_data), "pog_fallback": "pair"})
    assert _one_line(exc) == expected
    with pytest.raises(SettingsError) as exc:
        POG(_defaults("POG", pog_fallback="pair"), None)
    assert _one_line(exc) == expected
    with pytest.raises(SettingsError) as exc:
        POG(_defaults("POG", pog_tune_fallbacks=[]), None)
    assert _one_line(exc) == "pog_tune_fallbacks must be a non-empty list, each one of 'whole', 'none'; got []"


def test_a_component_setting_out_of_range_is_one_line_naming_key_allowed_and_value():
    from bundlellm_builtin.knowledge.patterns import PatternsSettings

    with pytest.raises(SettingsError) as exc:
        load_settings(PatternsSettings, {"min_support": 0}, "patterns")
    assert _one_line(exc) == "patterns.min_support must be a number > 0 and <= 1; got 0"


# --------------------------------------------------------------------------- the rule language


def test_list_only_rules_and_empty_means():
    grid = {"type": "float", "min": 0, "list": "only"}
    assert is_allowed(grid, [0, 1.5]) and is_allowed(grid, (2,))
    assert not is_allowed(grid, 1.0) and not is_allowed(grid, []) and not is_allowed(grid, None)
    assert not is_allowed(grid, [True]) and not is_allowed(grid, [-1])
    optional = {**grid, "empty_means": "no tuning"}
    assert is_allowed(optional, []) and is_allowed(optional, None) and not is_allowed(optional, [None])
    assert is_allowed({**optional, "none_means": "none"}, [None, 1])
    assert rule_error("k", "a", {"type": "str", "choices": ["a", "b"]}) is None
    assert rule_error("k", 1, {"type": "str", "choices": ["a", "b"]}) == "k must be one of 'a', 'b'; got 1"


def test_ranged_fields_use_the_same_rules_and_rows():
    @dataclasses.dataclass(frozen=True)
    class Demo:
        count: int = ranged(2, min=1)
        share: float | None = ranged(None, above=0, max=1, none_means="all")
        size: int = ranged(8, row="generation_batch_size")

    check_fields(Demo())
    with pytest.raises(SettingsError, match=r"^demo.count must be an integer >= 1; got 0$"):
        load_settings(Demo, {"count": 0}, "demo")
    with pytest.raises(SettingsError, match=r"^demo.share must be a number > 0 and <= 1, or ~ for all; got 0$"):
        load_settings(Demo, {"share": 0}, "demo")
    with pytest.raises(SettingsError, match=r"^generation_batch_size must be an integer >= 1; got 0$"):
        check_fields(Demo(size=0))
    with pytest.raises(ValueError, match="unknown field"):
        ranged(1, minimum=1)
