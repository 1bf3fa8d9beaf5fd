"""Benchmark PairSFT against the tags BundleSFT it replaces: training step cost and test cost.

    .venv/bin/python benchmarks/bench_pair_sft.py [--batches 6] [--sessions 40]
                                                  [--out benchmarks/results/pair_sft_cost.json]

On the prepared Electronic data, in one process on the same machine, each model with its default
settings: ``--batches`` real optimizer steps over the same length-bucketed batches of training
sessions (seconds per step, training sessions per second, the epoch extrapolated from them), then
the (briefly trained) model on the first ``--sessions`` test sessions (seconds per session:
generation of the tags answer vs one pass per session). Writes one JSON; nothing is asserted.
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

from recbole_bundlellm.llm.batches import epoch_batches  # noqa: E402
from recbole_bundlellm.config import BundleConfig  # noqa: E402
from recbole_bundlellm.data.sessions import sessions_from_dataset  # noqa: E402
from recbole_bundlellm.models.base import without_labels  # noqa: E402


def measure(name: str, data_path: str, batches: int, sessions: int) -> dict:
    config = BundleConfig(name, "electronic", [], {"data_path": data_path, "adaptation": "sft",
                                                   "label_bias_grid": []})
    train_data, _, test_data = data_preparation(config, create_dataset(config))
    model = config.spec.model_class(config, train_data.dataset)
    train = sessions_from_dataset(train_data.dataset)
    model.fit_bundles(train)
    examples = model.training_examples(train)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    order = epoch_batches(examples, config["train_batch_size"], seed=0, epoch=0)
    model.train()
    start = time.perf_counter()
    done = 0
    for batch_ids in order[:batches]:
        loss, _ = model.calculate_loss(model.collate([examples[i] for i in batch_ids]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done += len(batch_ids)
    train_seconds = time.perf_counter() - start
    model.eval()
    test = without_labels(sessions_from_dataset(test_data.dataset)[:sessions])
    start = time.perf_counter()
    model.generate_bundles(test)
    test_seconds = time.perf_counter() - start
    per_session = train_seconds / done
    return {"model": name, "trainable_parameters": model.run_info["parameters"]["trainable"],
            "settings": {k: config[k] for k in ("prompt_format", "train_batch_size", "lora_rank", "lora_layers",
                                                 "generation_batch_size", "max_new_tokens", "epochs")
                         } | ({"pair_layer": config["pair_layer"]} if name == "PairSFT" else {}),
            "train_steps": len(order[:batches]), "train_seconds": round(train_seconds, 2),
            "seconds_per_step": round(train_seconds / max(1, len(order[:batches])), 3),
            "training_sessions_per_second": round(done / train_seconds, 3),
            "epoch_minutes_extrapolated": round(per_session * len(examples) / 60, 2),
            "run_minutes_extrapolated": round(per_session * len(examples) * config["epochs"] / 60, 2),
            "test_sessions": len(test), "test_seconds_per_session": round(test_seconds / len(test), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--data-path", default=str(REPO / "dataset"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "pair_sft_cost.json")
    args = parser.parse_args()
    os.chdir(REPO)
    rows = [measure(name, args.data_path, args.batches, args.sessions) for name in ("BundleSFT", "PairSFT")]
    tags, pairs = rows
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "torch_threads": torch.get_num_threads(),
                          "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
              "dataset": "electronic", "models": rows,
              "ratios": {"training_step_speedup": round(tags["seconds_per_step"] / pairs["seconds_per_step"], 2),
                         "test_session_speedup": round(tags["test_seconds_per_session"]
                                                       / pairs["test_seconds_per_session"], 2)}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
