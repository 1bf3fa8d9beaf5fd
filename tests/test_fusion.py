"""RouteDK's mechanism: LoRA experts mixed per input in one pass, routers, the bundle vote."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch

import bundlellm_builtin.fusion as fusion_plugin
from recbole_bundlellm.llm.lora import AdapterError, BaseModelId, LoraSettings, attach_lora, save_adapter
from recbole_bundlellm.fusion.mixture import MixtureOfLoRA, load_experts
from recbole_bundlellm.fusion.representation import prompt_representation
from recbole_bundlellm.fusion.router import normalise
from recbole_bundlellm.fusion.vote import vote
from recbole_bundlellm.llm import load_llm
from recbole_bundlellm.extension.host import PluginError
from recbole_bundlellm.settings import SettingsError
from recbole_bundlellm.testing import plugin_host

EXPERTS = ("base", "rules", "thoughts")
REPO = Path(__file__).resolve().parents[1]
BASE = BaseModelId("tiny", "hash-of-the-tiny-model")


def _fresh(path):
    return load_llm(str(path), device="cpu", dtype="float32", use_cache=False).model


@pytest.fixture(scope="module")
def expert_folders(tiny_llm_path, tmp_path_factory):
    """Three saved experts of the tiny model with random, non-zero deltas (lora_B starts at 0)."""
    root = tmp_path_factory.mktemp("experts")
    folders = {}
    for seed, kind in enumerate(EXPERTS):
        model = attach_lora(_fresh(tiny_llm_path), LoraSettings(rank=2 + seed, alpha=8, dropout=0.1))
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.5)
        folders[kind] = save_adapter(model, root / kind, BASE, f"fingerprint-{kind}")
    return folders


@pytest.fixture(scope="module")
def mixed(tiny_llm_path, expert_folders):
    model = load_experts(_fresh(tiny_llm_path), expert_folders, BASE).eval()
    return model, MixtureOfLoRA(model, EXPERTS)


@pytest.fixture(scope="module")
def prompts(tiny_llm_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llm_path))
    tokenizer.padding_side = "left"
    texts = ["the user bought these items phone case charger", "shirt jeans"]
    return tokenizer(texts, return_tensors="pt", padding=True)


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


# -- the mixture ----------------------------------------------------------------------------------
def test_experts_load_frozen_under_their_kind_and_another_base_is_refused(tiny_llm_path, expert_folders, mixed):
    model, mixture = mixed
    assert set(model.peft_config) == set(EXPERTS) and mixture.expert_names == EXPERTS
    assert mixture.n_layers == len(mixture.layer_names) == 2 * 7  # every linear of 2 blocks
    assert not any(p.requires_grad for p in model.parameters())
    with pytest.raises(AdapterError, match="trained on the base model"):
        load_experts(_fresh(tiny_llm_path), expert_folders, BaseModelId("other", "another-hash"))
    with pytest.raises(AdapterError, match="no LoRA adapter named 'ruels'.*holds: base, rules, thoughts"):
        MixtureOfLoRA(model, ["base", "ruels"])


def test_remove_gives_the_layers_peft_forward_back(tiny_llm_path, expert_folders, prompts):
    model = load_experts(_fresh(tiny_llm_path), {"rules": expert_folders["rules"]}, BASE).eval()
    before = _logits(model, prompts)
    mixture = MixtureOfLoRA(model, ["rules"])
    layer = model.get_submodule(mixture.layer_names[0])
    assert "forward" in layer.__dict__
    mixture.remove()
    assert "forward" not in layer.__dict__ and mixture.n_layers == 0
    assert torch.equal(_logits(model, prompts), before)


def test_the_contract_and_the_vote_import_no_torch():
    import subprocess
    import sys

    code = ("import sys, recbole_bundlellm.fusion, recbole_bundlellm.fusion.vote; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_one_hot_weights_reproduce_each_single_expert_and_zero_weights_the_base(mixed, prompts):
    model, mixture = mixed
    with model.disable_adapter():
        base = _logits(model, prompts)
    for e, expert in enumerate(EXPERTS):
        model.set_adapter(expert, inference_mode=True)
        single = _logits(model, prompts)  # peft's own forward: only this adapter active
        assert not torch.allclose(single, base, atol=1e-3)  # the expert changes something
        # Another adapter active in peft: the mixture alone decides what is added.
        model.set_adapter(EXPERTS[(e + 1) % len(EXPERTS)], inference_mode=True)
        with mixture.weights(torch.nn.functional.one_hot(torch.tensor([e, e]), 3).float()):
            # Float tolerance: the mixture sums the same products in another order (stacked
            # experts), ~1e-6 on logits of magnitude ~7 after the tiny model's layers.
            assert torch.allclose(_logits(model, prompts), single, atol=2e-5)
    with mixture.weights(torch.zeros(2, 3)):
        assert torch.allclose(_logits(model, prompts), base, atol=1e-6)
    with mixture.weights(torch.zeros(2, mixture.n_layers, 3)):  # per-layer weights
        assert torch.allclose(_logits(model, prompts), base, atol=1e-6)
    model.set_adapter("base", inference_mode=True)
    assert not any(p.requires_grad for p in model.parameters())


def test_a_layer_under_the_mixture_adds_the_weighted_sum_of_the_expert_deltas(mixed):
    model, mixture = mixed
    name = mixture.layer_names[3]
    layer = model.get_submodule(name)
    x = torch.randn(2, 5, layer.in_features)
    w = torch.tensor([[0.2, 0.5, 0.3], [0.0, 0.1, 0.9]])
    with torch.no_grad():
        expected = layer.base_layer(x)
        for e, expert in enumerate(EXPERTS):
            delta = layer.lora_B[expert](layer.lora_A[expert](x)) * layer.scaling[expert]
            expected = expected + w[:, e, None, None] * delta
        with mixture.weights(w):
            got = layer(x)
        per_layer = torch.zeros(2, mixture.n_layers, 3)
        per_layer[:, 3] = w
        with mixture.weights(per_layer):
            got_per_layer = layer(x)
        plain = layer(x)  # outside the block: peft's forward again (one active adapter)
    assert torch.allclose(got, expected, atol=1e-6) and torch.allclose(got_per_layer, expected, atol=1e-6)
    # Training with LoRA dropout takes the per-expert path (one dropout per expert): same sum.
    layer.train()
    try:
        for expert in EXPERTS:
            layer.lora_dropout[expert].p = 0.0  # dropout modules present, but drawing nothing
        with torch.no_grad(), mixture.weights(w):
            trained_path = layer(x)
    finally:
        for expert in EXPERTS:
            layer.lora_dropout[expert].p = 0.1
        layer.eval()
    assert torch.allclose(trained_path, expected, atol=1e-6)
    assert not torch.allclose(plain, expected, atol=1e-4)


def test_each_input_of_a_batch_gets_its_own_mixture_in_one_pass(mixed, prompts):
    model, mixture = mixed
    w = torch.tensor([[0.7, 0.3, 0.0], [0.1, 0.2, 0.7]])
    with mixture.weights(w):
        together = _logits(model, prompts)
    for i in range(2):
        alone = {k: v[i:i + 1, prompts["attention_mask"][i].bool()] for k, v in prompts.items()}
        with mixture.weights(w[i:i + 1]):
            single = _logits(model, alone)
        keep = prompts["attention_mask"][i].bool()
        assert torch.allclose(together[i, keep], single[0], atol=1e-5)
    with pytest.raises(AdapterError, match=r"must be \[batch, 3\]"), mixture.weights(torch.ones(2, 2)):
        pass


def test_generation_with_a_cache_and_repeated_inputs_keeps_each_inputs_mixture(mixed, prompts):
    model, mixture = mixed
    layer = model.get_submodule(mixture.layer_names[0])
    x = torch.randn(4, 3, layer.in_features)
    w = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    with torch.no_grad():
        with mixture.weights(w):  # 2 inputs, each repeated twice in place (num_return_sequences)
            repeated = layer(x)
        with mixture.weights(w.repeat_interleave(2, dim=0)):
            assert torch.allclose(repeated, layer(x), atol=1e-6)
        with pytest.raises(AdapterError, match="batch of 4 inputs"), mixture.weights(torch.ones(3, 3) / 3):
            layer(x)
    # Greedy decoding step by step with the key/value cache: one-hot mixture == that expert alone.
    kwargs = {"input_ids": prompts["input_ids"], "attention_mask": prompts["attention_mask"], "max_new_tokens": 4,
              "do_sample": False, "use_cache": True, "pad_token_id": 1}
    model.set_adapter("thoughts", inference_mode=True)
    with torch.no_grad():
        single = model.generate(**kwargs)
        model.set_adapter("base", inference_mode=True)  # peft's active adapter plays no part in a mixture
        other = model.generate(**kwargs)
        with mixture.weights(torch.tensor([[0.0, 0.0, 1.0]] * 2)):
            mixed_out = model.generate(**kwargs)
    assert torch.equal(single, mixed_out) and not torch.equal(single, other)


def test_a_mixture_first_used_by_generation_can_then_train(tiny_llm_path, expert_folders, prompts):
    model = load_experts(_fresh(tiny_llm_path), expert_folders, BASE).eval()
    mixture = MixtureOfLoRA(model, EXPERTS)
    with torch.inference_mode(), mixture.weights(torch.ones(2, 3) / 3):
        _logits(model, prompts)  # the stacked experts are built here, under inference mode
    w = torch.full((2, 3), 1 / 3, requires_grad=True)
    with mixture.weights(w):
        model(input_ids=prompts["input_ids"], attention_mask=prompts["attention_mask"]).logits.sum().backward()
    assert w.grad is not None and bool(w.grad.abs().sum() > 0)


def test_gradients_reach_the_weights_but_not_the_experts(mixed, prompts):
    model, mixture = mixed
    w = torch.full((2, 3), 1 / 3, requires_grad=True)
    with mixture.weights(w):
        model(input_ids=prompts["input_ids"], attention_mask=prompts["attention_mask"]).logits.sum().backward()
    assert w.grad is not None and bool(w.grad.abs().sum() > 0)
    assert all(p.grad is None for p in model.parameters())


def test_the_representation_is_the_base_models_mean_over_the_prompt(tiny_llm_path, mixed, prompts):
    model, mixture = mixed
    with mixture.weights(torch.ones(2, 3) / 3):  # adapters are off whatever the mixture
        rep = prompt_representation(model, prompts["input_ids"], prompts["attention_mask"])
    plain = _fresh(tiny_llm_path)
    for i in range(2):
        keep = prompts["attention_mask"][i].bool()
        with torch.no_grad():
            hidden = plain(input_ids=prompts["input_ids"][i:i + 1, keep], output_hidden_states=True).hidden_states[-1]
        assert torch.allclose(rep[i], hidden[0].mean(0), atol=1e-5)
    assert rep.shape == (2, plain.config.hidden_size) and rep.dtype == torch.float32
    # The frozen experts stay frozen (peft's disable_adapter would make the active one trainable).
    assert not any(p.requires_grad for p in model.parameters())
    last = prompt_representation(model, prompts["input_ids"], prompts["attention_mask"], pooling="last")
    with torch.no_grad():
        final = plain(input_ids=prompts["input_ids"][:1, prompts["attention_mask"][0].bool()],
                      output_hidden_states=True).hidden_states[-1][0, -1]
    assert torch.allclose(last[0], final, atol=1e-5)


def test_an_early_routing_layer_stops_the_pass_at_its_block(tiny_llm_path, mixed, prompts):
    from recbole_bundlellm.fusion.representation import RepresentationCache, decoder_layers

    model, _ = mixed
    blocks = decoder_layers(model)
    calls = []
    handles = [block.register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i, block in enumerate(blocks)]
    try:
        rep = prompt_representation(model, prompts["input_ids"], prompts["attention_mask"], layer=1)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == [0]  # block 1 ran, the blocks after it did not
    plain = _fresh(tiny_llm_path)
    keep = prompts["attention_mask"][0].bool()
    with torch.no_grad():
        hidden = plain(input_ids=prompts["input_ids"][:1, keep], output_hidden_states=True).hidden_states[1]
    assert torch.allclose(rep[0], hidden[0].mean(0), atol=1e-5)
    assert not any(p.requires_grad for p in model.parameters())
    for bad in (0, len(blocks) + 1, -2):
        with pytest.raises(SettingsError, match="routing_layer"):
            RepresentationCache(model, pad_id=0, layer=bad)


# -- routers --------------------------------------------------------------------------------------
def test_normalise_sums_to_one_keeps_top_k_and_sharpens_with_temperature():
    scores = torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.5, 0.1, 0.2, 0.9]])
    w = normalise(scores)
    assert torch.allclose(w.sum(-1), torch.ones(2))
    top = normalise(scores, top_k=2)
    assert torch.allclose(top.sum(-1), torch.ones(2))
    assert (top == 0).sum(-1).tolist() == [2, 2] and top[0, 0] == 0 and top[0, 3] == 0 and top[1, 1] == 0
    assert torch.allclose(top[0, 1:3], torch.softmax(torch.tensor([3.0, 2.0]), -1))
    entropy = lambda p: -(p * p.clamp_min(1e-12).log()).sum(-1)  # noqa: E731
    assert bool((entropy(normalise(scores, 5.0)) > entropy(w)).all())
    assert bool((entropy(normalise(scores, 0.2)) < entropy(w)).all())


def test_the_built_in_routers_load_through_a_plugin_host_and_give_weights():
    host = plugin_host(fusion_plugin)
    assert host.names("router") == ["fixed", "input_aware", "static_merge", "uniform"]
    # Installed, the plugin loads through its entry point like the other built-ins.
    entry_points = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    assert entry_points["recbole_bundlellm"]["fusion"] == fusion_plugin.__name__
    config = {"input_aware": {"hidden_size": 8, "top_k": 2, "temperature": 0.5},
              "fixed": {"weights": {"rules": 1}}}
    x = torch.randn(4, 16)
    router = host.create("router", "input_aware", config).build(EXPERTS, 16)
    # Untrained, the scores are all equal: two experts at 1/2 each (top_k 2), the third at 0.
    assert router(x).shape == (4, 3) and sorted(router(x)[0].tolist()) == [0.0, 0.5, 0.5]
    torch.manual_seed(0)
    torch.nn.init.normal_(router.net[-1].weight)
    w = router(x)
    assert torch.allclose(w.sum(-1), torch.ones(4)) and (w == 0).sum(-1).tolist() == [1, 1, 1, 1]
    assert len({tuple(row.tolist()) for row in w}) > 1  # it depends on the input
    assert sum(p.numel() for p in router.parameters() if p.requires_grad) > 0
    per_layer = host.create("router", "input_aware", {"input_aware": {"per_layer": True}}).build(EXPERTS, 16, 5)
    assert per_layer(x).shape == (4, 5, 3) and torch.allclose(per_layer(x).sum(-1), torch.ones(4, 5))
    assert torch.equal(host.create("router", "uniform", {}).build(EXPERTS, 16)(x), torch.full((4, 3), 1 / 3))
    fixed = host.create("router", "fixed", config).build(EXPERTS, 16)
    assert fixed(x).tolist() == [[0.0, 1.0, 0.0]] * 4 and not list(fixed.parameters())
    # A static merge offers the simplex grid for the model to choose from on valid.
    grid = host.create("router", "static_merge", {"static_merge": {"step": 0.5}}).candidates(EXPERTS)
    assert len(grid) == 6 and all(sum(w) == 1 and len(w) == 3 for w in grid) and [1.0, 0.0, 0.0] in grid
    assert host.create("router", "input_aware", config).candidates(EXPERTS) is None


def test_router_settings_errors_name_the_key_and_suggest():
    host = plugin_host(fusion_plugin)
    with pytest.raises(PluginError, match="unknown router 'input_awre'; did you mean 'input_aware'"):
        host.get("router", "input_awre")
    with pytest.raises(SettingsError, match="input_aware.top_k' is 4 but there are only 3 experts"):
        host.create("router", "input_aware", {"input_aware": {"top_k": 4}}).build(EXPERTS, 16)
    with pytest.raises(SettingsError, match="input_aware.temperature must be a number > 0; got 0"):
        host.create("router", "input_aware", {"input_aware": {"temperature": 0}})
    with pytest.raises(SettingsError, match="names 'rule', which is not an expert; did you mean 'rules'"):
        host.create("router", "fixed", {"fixed": {"weights": {"rule": 1}}}).build(EXPERTS, 16)
    with pytest.raises(SettingsError, match="must be a number >= 0"):
        host.create("router", "fixed", {"fixed": {"weights": {"rules": -1}}})
    with pytest.raises(SettingsError, match="step must be 1/n"):
        host.create("router", "static_merge", {"static_merge": {"step": 0.3}})


# -- the vote -------------------------------------------------------------------------------------
def test_the_vote_keeps_bundles_enough_answers_share():
    a, b, c = ("1", "2"), ("3", "4"), ("5", "6", "7")
    result = vote([[a, b], [b, a[::-1]], [a, c], None], threshold=0.5)
    assert result.bundles == [frozenset(a), frozenset(b)] and result.support == (3, 2)
    assert result.fallback is None and result.parsed == 3
    # The share counts unparsable answers: 2 of 4 is not 0.75.
    assert vote([[a, b], [b, a], [a, c], None], threshold=0.75).bundles == [frozenset(a)]
    # A repeated bundle counts once per answer.
    assert vote([[a, a], [b], [c]], threshold=0.5).fallback is not None


def test_the_vote_resolves_overlaps_by_support_then_size_then_ids():
    big, small, other = ("1", "2", "3"), ("1", "2"), ("3", "9")
    # Same support: the larger bundle wins, the overlapping smaller one is dropped.
    assert vote([[big], [small], [big], [small]], threshold=0.5).bundles == [frozenset(big)]
    # Higher support beats size.
    assert vote([[big], [small], [small], [small, other]], threshold=0.25).bundles == [frozenset(small), frozenset(other)]
    # Same support and size: the sorted item ids decide, whatever the answers' order.
    x, y = ("2", "3"), ("1", "3")
    assert vote([[x], [y]], threshold=0.5).bundles == vote([[y], [x]], threshold=0.5).bundles == [frozenset(y)]


def test_the_vote_falls_back_to_the_most_agreeing_answer_and_fails_only_without_answers():
    a, b, c, d = ("1", "2"), ("3", "4"), ("1", "2", "5"), ("3", "4", "6")
    # No bundle reaches 3 of 4; answer 2 shares one bundle with each other answer.
    result = vote([[a, d], [c, b], [a, b], None], threshold=0.75)
    assert result.fallback == 2 and result.bundles == [frozenset(a), frozenset(b)]
    # No exact sharing at all: co-bundled item pairs decide ({1,2} and {3,4} agree with the others).
    result = vote([[("1", "9")], [c, d], [("1", "2", "7"), ("3", "4", "8")]], threshold=0.9)
    assert result.fallback == 1
    # Nothing agrees: the first parsed answer.
    assert vote([None, [a], [b]], threshold=1.0).fallback == 1
    assert vote([None, None], threshold=0.5).bundles is None and vote([], threshold=0.5).bundles is None
    assert vote([[], []], threshold=0.5).bundles == []
    with pytest.raises(SettingsError, match="threshold"):
        vote([[a]], threshold=0)
