"""Session features for routers (issue 21): what a session's features are, how RouteDK notes them
for every prompt its router reads, ``input_aware: {session_features: True}`` training on them and
routing by them, routers written before the features still working, and clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import bundlellm_builtin.fusion as fusion_plugin
from recbole_bundlellm.adaptation.strategy import EXAMPLE, Retrieved, StudentView
from recbole_bundlellm.commands.runner import run
from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.extension.hookspecs import hookimpl
from recbole_bundlellm.fusion import FusionRouter, build_router, uses_session_features
from recbole_bundlellm.fusion.features import SessionFeatures, feature_names, session_feature_row
from recbole_bundlellm.llm.lora import AdapterError
from recbole_bundlellm.settings import NoSettings, SettingsError
from recbole_bundlellm.testing import plugin_host

from model_builders import built_model

EXPERTS = ("base", "rules", "thoughts")
NAMES = ("products", "prompt_tokens", "knowledge:patterns", "knowledge:rules", "knowledge:thoughts")
#: As tests/test_route_dk.py: two experts trained a few steps on the tiny data, a router trained 2 epochs.
EXPERT = {"epochs": 1, "train_batch_size": 2, "max_new_tokens": 6, "generation_batch_size": 8, "adaptation": "sft",
          "learning_rate": 0.01, "label_bias_grid": [], "eval_step": 0}
ROUTER = {"epochs": 2, "train_batch_size": 2, "max_new_tokens": 6, "generation_batch_size": 8, "learning_rate": 0.05,
          "label_bias_grid": [], "adaptation": "sft"}


@pytest.fixture(scope="module")
def patterns(tiny_patterns) -> dict:
    """The settings of a run whose prompts hold the tiny data's category patterns, those seen at
    least twice: some sessions' prompts hold patterns, some do not."""
    return tiny_patterns(2)


@pytest.fixture(scope="module")
def experts(tiny_data, tiny_llm_path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("feature_experts")
    for seed, kind in enumerate(("base", "alt")):
        run("BundleSFT", "clothing", output_dir=str(root / kind), config_dict={
            "data_path": str(tiny_data), "llm_model": str(tiny_llm_path), "seed": 100 + seed, **EXPERT})
    return {"base": root / "base", "alt": root / "alt"}


@pytest.fixture
def route(tiny_data, tiny_llm_path, experts, patterns):
    """A RouteDK config over ``experts`` reading the patterns prompt, with ``overrides``."""
    def config(**overrides) -> dict:
        return {"data_path": str(tiny_data), "llm_model": str(tiny_llm_path),
                "experts": {k: str(v) for k, v in experts.items()}, **ROUTER, **patterns,
                "input_aware": {"hidden_size": 8, "session_features": True}, **overrides}
    return config


def _records(result) -> list[dict]:
    return [json.loads(line) for line in (result.output_dir / "predictions.jsonl").read_text().splitlines()]


# -- the record -----------------------------------------------------------------------------------
def test_a_sessions_features_are_its_products_prompt_tokens_and_the_knowledge_kinds_shown():
    session = Session("s1", ("a", "b", "c"), ("shirt", "tie", "belt"))
    solved = Session("s0", ("x", "y"), ("cap", "scarf"), bundles=(frozenset({"x", "y"}),))
    view = StudentView(items=(Retrieved("rules", "Shirts go with ties.", 0.6),
                              Retrieved(EXAMPLE, "", 1.0, session=solved),
                              Retrieved("thoughts", "Both keep one warm.", 0.5, session=solved)))  # the example's own
    assert feature_names(["patterns", "rules", "thoughts"]) == NAMES
    assert feature_names([]) == ("products", "prompt_tokens")  # a run on raw data: the counts alone
    assert session_feature_row(session, view, 120, NAMES) == (3.0, 120.0, 0.0, 1.0, 1.0)
    assert session_feature_row(session, StudentView(), 40, NAMES) == (3.0, 40.0, 0.0, 0.0, 0.0)
    features = SessionFeatures.from_rows(NAMES, [session_feature_row(session, view, 120, NAMES),
                                                 session_feature_row(solved, StudentView(), 40, NAMES)])
    assert len(features) == 2 and features.values.dtype == torch.float32
    assert features.column("products").tolist() == [3.0, 2.0]
    # What input_aware reads: log1p of the counts, the multi-hot as it is.
    expected = torch.tensor([[math.log1p(3), math.log1p(120), 0, 1, 1], [math.log1p(2), math.log1p(40), 0, 0, 0]])
    assert torch.allclose(features.log_scaled(), expected)
    with pytest.raises(ValueError, match=r"must be \[batch, 5\]"):
        SessionFeatures(NAMES, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="unknown session feature 'items'"):
        session_feature_row(session, view, 1, ["items"])


# -- the contract ---------------------------------------------------------------------------------
class Legacy(torch.nn.Module):
    """A third party's module written before session features: ``forward(inputs)`` only."""

    def __init__(self, n_experts: int, input_size: int) -> None:
        super().__init__()
        self.score = torch.nn.Linear(input_size, n_experts)

    def forward(self, inputs):
        return torch.softmax(self.score(inputs.float()), dim=-1)


class LegacyRouter(FusionRouter):
    """A third party's router against the contract before session features (no ``features``)."""

    name = "legacy"
    description = "a linear softmax over the representation"
    Settings = NoSettings

    def build(self, experts, input_size, n_layers=1):
        return Legacy(len(experts), input_size)


class KwargsRouter(LegacyRouter):
    name = "kwargs"

    def build(self, experts, input_size, n_layers=1, **options):
        self.options = options
        return Legacy(len(experts), input_size)


class LegacyPlugin:
    @hookimpl
    def register_fusion_routers(self, register):
        register(LegacyRouter)


def test_build_router_gives_features_only_to_a_build_that_takes_them():
    legacy = build_router(LegacyRouter(), EXPERTS, 16, 4, NAMES)
    assert isinstance(legacy, Legacy) and not uses_session_features(legacy)  # no attribute: no features
    kwargs = KwargsRouter()
    build_router(kwargs, EXPERTS, 16, 1, NAMES)
    assert kwargs.options == {"features": NAMES}
    host = plugin_host(fusion_plugin)
    plain = build_router(host.create("router", "input_aware", {}), EXPERTS, 16, 1, NAMES)
    assert not uses_session_features(plain) and plain.net[1].in_features == 16  # off by default: as before
    reading = build_router(host.create("router", "input_aware", {"input_aware": {"session_features": True}}),
                           EXPERTS, 16, 1, NAMES)
    assert uses_session_features(reading) and reading.feature_names == NAMES
    assert reading.net[1].in_features == 16 + len(NAMES)
    assert {n for n, _ in reading.named_parameters()} == {n for n, _ in plain.named_parameters()}


def test_input_aware_weights_follow_the_features_for_one_representation():
    host = plugin_host(fusion_plugin)
    router = host.create("router", "input_aware", {"input_aware": {"session_features": True, "hidden_size": 0}})
    module = router.build(EXPERTS, 16, features=NAMES)
    representation = torch.randn(1, 16).expand(2, -1)  # two sessions the representation cannot tell apart
    features = SessionFeatures.from_rows(NAMES, [(2, 300, 0, 1, 0), (9, 300, 0, 1, 0)])
    assert torch.allclose(module(representation, features), torch.full((2, 3), 1 / 3))  # untrained: uniform
    with torch.no_grad():  # a hand-set output layer: the first expert's score is log1p(products)
        module.net[-1].weight[0, 16 + NAMES.index("products")] = 1.0
    weights = module(representation, features)
    assert weights[1, 0] > weights[0, 0] > 1 / 3 and torch.allclose(weights.sum(-1), torch.ones(2))
    assert torch.allclose(weights[:, 0] / weights[:, 1], torch.tensor([3.0, 10.0]))  # exp(log1p(n)) = n + 1
    with pytest.raises(SettingsError, match=r"reads the session features \[.*\], got none"):
        module(representation)
    with pytest.raises(SettingsError, match="got \\['products', 'prompt_tokens'\\]"):
        module(representation, SessionFeatures.from_rows(NAMES[:2], [(2, 300), (9, 300)]))


def test_a_wrong_session_features_setting_is_one_clear_line():
    host = plugin_host(fusion_plugin)
    errors = []
    for settings in ({"session_feature": True}, {"session_features": "yes"}):
        with pytest.raises(SettingsError) as caught:
            host.create("router", "input_aware", {"input_aware": settings})
        errors.append(str(caught.value))
    assert "unknown setting 'input_aware.session_feature'; did you mean 'session_features'" in errors[0]
    assert "'input_aware.session_features' must be true or false, got 'yes'" in errors[1]
    with pytest.raises(SettingsError) as caught:  # built without features (a model that gives none)
        host.create("router", "input_aware", {"input_aware": {"session_features": True}}).build(EXPERTS, 16)
    errors.append(str(caught.value))
    assert "'input_aware.session_features' is on but this model gives its router no session features" in errors[2]
    assert all("\n" not in e for e in errors)


# -- RouteDK --------------------------------------------------------------------------------------
def test_routedk_notes_the_features_of_every_prompt_its_router_reads(route):
    from recbole_bundlellm.data.sessions import sessions_from_dataset
    from recbole_bundlellm.models.base import without_labels

    model, (train_data, _, test_data) = built_model("RouteDK", route())
    assert model.feature_names == ("products", "prompt_tokens", "knowledge:patterns")
    assert model.router_features == list(model.feature_names) and uses_session_features(model.router)
    train = sessions_from_dataset(train_data.dataset)
    model.fit_bundles(train)
    examples = model.training_examples(train)
    views = model.views([s for s in train if s.bundles], training=True)
    by_id = {s.session_id: s for s in train}
    shown = []
    for example, view in zip(examples, views):
        products, tokens, has_patterns = model.session_features[example.prompt_ids]
        assert products == len(by_id[example.session_id]) and tokens == len(example.prompt_ids)
        assert has_patterns == float(bool(view.knowledge("patterns")))
        shown.append(has_patterns)
    assert set(shown) == {0.0, 1.0}  # sessions with patterns in their prompt and sessions without
    # Generation notes each prompt as the student reads it, and the router reads those rows.
    test = without_labels(sessions_from_dataset(test_data.dataset))
    predictions = model.generate_bundles(test)
    assert all("routing" in p.details for p in predictions)
    features = model.prompt_features(model.prompt_ids_read)
    assert features.column("products").tolist() == [float(len(s)) for s in test]
    assert features.column("prompt_tokens").tolist() == [float(len(ids)) for ids in model.prompt_ids_read]
    with pytest.raises(RuntimeError, match="no session features were noted for a prompt of 3 tokens"):
        model.prompt_features([[1, 2, 3]])


def test_an_old_style_third_party_router_still_trains_and_routes_with_routedk(route):
    result = run("RouteDK", "clothing", output_dir="legacy", config_dict=route(fusion_router="legacy"),
                 host=plugin_host(("legacy", LegacyPlugin())))
    info = result.info
    assert info["router"]["name"] == "legacy" and "session_features" not in info["router"]
    assert info["training"]["epochs_run"] == 2 and info["training"]["trainable_at_end"] > 0
    assert all(set(r["routing"]) == {"base", "alt"} for r in _records(result))


def test_input_aware_with_session_features_trains_on_them_and_is_not_reused_without_them(route, tiny_llm_path):
    result = run("RouteDK", "clothing", output_dir="route", config_dict=route())
    info = result.info
    assert info["router"]["session_features"] == ["products", "prompt_tokens", "knowledge:patterns"]
    assert info["router"]["settings"]["session_features"] is True and info["training"]["epochs_run"] == 2
    from safetensors.torch import load_file

    router = load_file(str(result.output_dir / "adapter" / "router.safetensors"))
    hidden = json.loads((tiny_llm_path / "config.json").read_text())["hidden_size"]
    first = router["net.1.weight"]  # [hidden_size 8, the representation + 3 features]
    assert first.shape == (8, hidden + 3) and float(first[:, hidden:].abs().sum()) > 0
    assert all(sum(r["routing"].values()) == pytest.approx(1, abs=1e-3) for r in _records(result))
    again = run("RouteDK", "clothing", output_dir="route", config_dict=route())
    assert again.info["training"]["reused_adapter"] and again.test_result == result.test_result
    # Without features it is another router: one given by adapter_path is refused in one line, and
    # the one above, found in the output folder, is not reused (its fingerprint differs).
    with pytest.raises(AdapterError, match=r"trained reading the session features \[.*\], this run's router "
                                           "reads no session features"):
        run("RouteDK", "clothing", output_dir="load", config_dict=route(
            input_aware={"hidden_size": 8}, adapter_path=str(result.output_dir / "adapter")))
    plain = run("RouteDK", "clothing", output_dir="route", config_dict=route(input_aware={"hidden_size": 8}))
    assert not plain.info["training"].get("reused_adapter") and "session_features" not in plain.info["router"]
    assert plain.info["training"]["epochs_run"] == 2


def test_the_fingerprint_covers_the_features_and_the_default_leaves_it_as_before(route):
    """``session_features: False``, given or by default, is left out of the fingerprint (so the
    fingerprint is the one before the key existed and routers trained then stay reusable; checked
    against the commit before it); on, it is another router's."""
    from recbole_bundlellm.data.sessions import sessions_from_dataset

    prints = []
    for settings in ({"hidden_size": 8}, {"hidden_size": 8, "session_features": False},
                     {"hidden_size": 8, "session_features": True}):
        model, (train_data, valid_data, _) = built_model("RouteDK", route(input_aware=settings))
        train, valid = sessions_from_dataset(train_data.dataset), sessions_from_dataset(valid_data.dataset)
        model.fit_bundles(train)
        prints.append(model.fingerprint(model.training_examples(train), valid))
    assert prints[0] == prints[1] != prints[2]
