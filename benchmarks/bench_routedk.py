"""Benchmark RouteDK's costs: router overhead at inference, K-sample enhancement, router training.

    .venv/bin/python benchmarks/bench_routedk.py [--sessions 48] [--samples 5] [--steps 6]
        [--expert base=outputs/electronic/studies/format/raw_sft ...] [--layers -1 8 4]
        [--out benchmarks/results/routedk_speed.json]

On the prepared Electronic test sessions, with the given trained experts (BundleSFT output folders):

- ``router``: generation with the input-aware router mixing the experts per input in one pass
  (prompt representations computed, not cached, within the timing);
- ``single_expert``: the first expert alone through peft's own forward (one rank-r LoRA), and
  ``static_merge``: the experts merged into one LoRA (peft ``add_weighted_adapter``, ``cat``: its
  rank is the sum of theirs): the baselines the router's overhead is measured against;
- ``k_samples``: K sampled answers per session voted over, with the prompt's prefill shared by the
  K samples and without (HF's way, the prompt K times), against one greedy answer;
- ``router_training``: seconds per optimizer step of the router (experts frozen);
- ``overhead_split``: where the router's extra time goes: the same routed generation with the
  prompt representations already cached (the mixture alone), and the representation pass alone at
  each ``--layers`` value (``routing_layer``: -1 the last hidden states, k block k), plus the old
  way (the whole model with its LM head) for reference; the overhead each layer would give.

Writes one JSON (machine, settings, figures); nothing is asserted here: tests never time things.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

import recbole_bundlellm  # noqa: E402,F401
import torch  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402

from recbole_bundlellm.llm.batches import collate, epoch_batches  # noqa: E402
from recbole_bundlellm.config import BundleConfig  # noqa: E402
from recbole_bundlellm.data.sessions import sessions_from_dataset  # noqa: E402
from recbole_bundlellm.llm.batches import left_padded  # noqa: E402
from recbole_bundlellm.fusion.representation import base_model_only  # noqa: E402
from recbole_bundlellm.models.base import without_labels  # noqa: E402
from recbole_bundlellm.models.students.route_dk import RouteDK  # noqa: E402

DEFAULT_EXPERTS = ["base=outputs/electronic/studies/format/raw_sft",
                   "rules=outputs/electronic/studies/format/rules_sft",
                   "thoughts=outputs/electronic/studies/format/thoughts_sft"]


def timed_generation(model: RouteDK, sessions: list) -> dict:
    model.representations.clear()  # the router's input is part of its cost
    model.backend.reset_stats()
    start = time.perf_counter()
    predictions = model.generate_bundles(sessions)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "seconds_per_session": round(seconds / len(sessions), 4),
            "failed": sum(p.failed for p in predictions),
            "new_tokens": int(model.backend.stats["new_tokens"]),
            "prompt_passes_shared": int(model.backend.stats["shared_prefills"])}


def sampled(model: RouteDK, sessions: list, k: int, shared: bool) -> dict:
    config = model.generation
    saved = (config.do_sample, config.num_return_sequences, config.shared_prefill)
    config.do_sample, config.num_return_sequences, config.shared_prefill = k > 1, k, shared
    try:
        return timed_generation(model, sessions)
    finally:
        config.do_sample, config.num_return_sequences, config.shared_prefill = saved


def representation_seconds(model: RouteDK, prompt_ids: list, layer: int | None) -> float:
    """Seconds to compute the representations of ``prompt_ids`` (``None``: the whole model with
    its LM head and every hidden state, the way before the body-only pass)."""
    cache = model.representations
    cache.clear()
    saved = cache.layer
    start = time.perf_counter()
    if layer is None:
        with torch.no_grad(), base_model_only(model.llm):
            for i in range(0, len(prompt_ids), cache.batch_size):
                ids, mask = left_padded(prompt_ids[i:i + cache.batch_size], model.pad_id())
                model.llm(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
    else:
        cache.layer = layer
        try:
            cache(prompt_ids)
        finally:
            cache.layer = saved
    seconds = time.perf_counter() - start
    cache.clear()
    return round(seconds, 2)


def router_steps(model: RouteDK, examples: list, steps: int, batch_size: int) -> dict:
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    order = epoch_batches(examples, batch_size, seed=0, epoch=0)[:steps]
    start = time.perf_counter()
    for ids in order:
        loss, _ = model.calculate_loss(collate([examples[i] for i in ids], model.pad_id()))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    model.eval()
    return {"steps": len(order), "batch_size": batch_size, "seconds_per_step": round(seconds / len(order), 3),
            "trainable_parameters": sum(p.numel() for p in params),
            "epoch_minutes_extrapolated": round(seconds / len(order) * len(epoch_batches(examples, batch_size, 0, 0)) / 60, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=48)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--expert", action="append", default=None, help="kind=folder (repeatable)")
    parser.add_argument("--layers", type=int, nargs="+", default=[-1, 8, 4], help="routing_layer values to time")
    parser.add_argument("--data-path", default=str(REPO / "dataset"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "routedk_speed.json")
    args = parser.parse_args()
    os.chdir(REPO)
    experts = dict(e.split("=", 1) for e in (args.expert or DEFAULT_EXPERTS))
    config = BundleConfig("RouteDK", "electronic", [], {"data_path": args.data_path, "experts": experts,
                                                        "knowledge_use": [], "label_bias_grid": []})
    dataset = create_dataset(config)
    train_data, _, test_data = data_preparation(config, dataset)
    model = RouteDK(config, train_data.dataset).eval()
    train = sessions_from_dataset(train_data.dataset)
    model.fit_bundles(train)
    test = without_labels(sessions_from_dataset(test_data.dataset)[: args.sessions])
    result: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "device": model.run_info["device"], "dtype": model.run_info["dtype"]},
        "experts": experts, "sessions": len(test),
        "settings": {k: config[k] for k in ("generation_batch_size", "max_new_tokens", "routing_pooling")},
    }
    result["router"] = timed_generation(model, test)
    prompt_ids = [list(p) for p in model.prompt_ids_read]
    model.representations(prompt_ids)  # cached: the next generation pays for the mixture alone
    model.backend.reset_stats()
    start = time.perf_counter()
    model.generate_bundles(test)
    cached_seconds = round(time.perf_counter() - start, 2)
    split = {"mixture_only_seconds": cached_seconds,
             "representation_seconds": {str(layer): representation_seconds(model, prompt_ids, layer)
                                        for layer in args.layers},
             "representation_whole_model_with_lm_head_seconds": representation_seconds(model, prompt_ids, None),
             "prompt_tokens": sum(len(p) for p in prompt_ids)}
    result["overhead_split"] = split
    k = args.samples
    result["k_samples"] = {"k": k, "greedy_k1": result["router"],
                           "shared_prefill": sampled(model, test, k, shared=True),
                           "unshared_prefill": sampled(model, test, k, shared=False)}
    ks = result["k_samples"]
    ks["cost_vs_k1_shared"] = round(ks["shared_prefill"]["seconds"] / result["router"]["seconds"], 2)
    ks["cost_vs_k1_unshared"] = round(ks["unshared_prefill"]["seconds"] / result["router"]["seconds"], 2)
    result["router_training"] = router_steps(model, model.training_examples(train), args.steps,
                                             config["train_batch_size"])
    # One expert alone through peft's own forward (a single rank-r LoRA): the stricter baseline.
    first = next(iter(experts))
    model.llm.set_adapter(first)
    model.llm.requires_grad_(False)
    model.merged_weights = [1.0 if kind == first else 0.0 for kind in experts]  # no mixture at generation
    result["single_expert"] = {"expert": first, **timed_generation(model, test)}
    model.merged_weights = None
    model._merge([1.0 / len(experts)] * len(experts))
    result["static_merge"] = timed_generation(model, test)
    result["router_overhead_vs_single_expert"] = round(
        result["router"]["seconds"] / result["single_expert"]["seconds"] - 1, 3)
    result["router_overhead_vs_static_merge"] = round(
        result["router"]["seconds"] / result["static_merge"]["seconds"] - 1, 3)
    single = result["single_expert"]["seconds"]
    split["mixture_overhead_vs_single_expert"] = round(cached_seconds / single - 1, 3)
    split["overhead_vs_single_expert_by_layer"] = {
        layer: round((cached_seconds + rep) / single - 1, 3) for layer, rep in split["representation_seconds"].items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
