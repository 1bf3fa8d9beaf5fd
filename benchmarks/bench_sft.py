"""Benchmark fine-tuning the student (BundleSFT): training throughput, memory, generation speed.

    .venv/bin/python benchmarks/bench_sft.py [--batches 12] [--device cpu|cuda] [--dtype auto|bfloat16]
                                             [--out benchmarks/results/sft_speed.json]

On the prepared Electronic data (``bundlellm data prepare``), with BundleSFT's default settings
(compact prompt, LoRA rank 16 on every linear projection):

- training: ``--batches`` real optimizer steps over length-bucketed batches of the training
  examples: target tokens/s, all tokens/s, sessions/s, seconds per step, and the time of one
  epoch over all training sessions extrapolated from the tokens/s; trainable parameters; peak RSS
  (and peak GPU memory on CUDA);
- generation of the (briefly) fine-tuned student on ``--sessions`` test sessions: sessions/s
  batched (``generation_batch_size``) vs one at a time, with the adapter unmerged vs merged into
  the base weights (``merge_and_unload``).

Writes one JSON (machine, settings, figures); nothing here is asserted: tests never time things.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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
from recbole_bundlellm.models.base import without_labels  # noqa: E402
from recbole_bundlellm.models.students.bundle_sft import BundleSFT  # noqa: E402


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def train_steps(model: BundleSFT, examples: list, batches: int, batch_size: int, device: torch.device) -> dict:
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-4)
    order = epoch_batches(examples, batch_size, seed=0, epoch=0)[:batches]
    pad = model.pad_id()
    tokens = targets = sessions = 0
    start = time.perf_counter()
    for batch_ids in order:
        batch = collate([examples[i] for i in batch_ids], pad)
        loss, n_target = model.calculate_loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
        targets += n_target
        sessions += len(batch_ids)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    all_tokens = sum(len(e) for e in examples)
    return {"steps": len(order), "sessions": sessions, "seconds": round(seconds, 2),
            "seconds_per_step": round(seconds / len(order), 3), "tokens_per_second": round(tokens / seconds, 1),
            "target_tokens_per_second": round(targets / seconds, 1),
            "sessions_per_second": round(sessions / seconds, 3),
            "epoch_tokens": all_tokens, "epoch_sessions": len(examples),
            "epoch_minutes_extrapolated": round(all_tokens / (tokens / seconds) / 60, 1)}


def generation_speed(model: BundleSFT, sessions: list, batch_size: int) -> dict:
    out = {}
    for label, size in (("batched", batch_size), ("batch_1", 1)):
        model.generation.batch_size = size
        start = time.perf_counter()
        model.generate_bundles(sessions)
        seconds = time.perf_counter() - start
        out[label] = {"batch_size": size, "sessions_per_second": round(len(sessions) / seconds, 3),
                      "seconds": round(seconds, 2)}
    model.generation.batch_size = batch_size
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--data-path", default=str(REPO / "dataset"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "sft_speed.json")
    args = parser.parse_args()
    os.chdir(REPO)
    config = BundleConfig("BundleSFT", "electronic", [], {"data_path": args.data_path, "llm_device": args.device,
                                                          "llm_dtype": args.dtype, "adaptation": "sft"})
    dataset = create_dataset(config)
    train_data, _, test_data = data_preparation(config, dataset)
    model = BundleSFT(config, train_data.dataset)
    device = torch.device(model.run_info["device"])
    train = sessions_from_dataset(train_data.dataset)
    model.fit_bundles(train)
    examples = model.training_examples(train)
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "device": str(device), "dtype": model.run_info["dtype"],
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "settings": {k: config[k] for k in ("prompt_format", "show_categories", "max_title_words", "lora_rank",
                                            "lora_target_modules", "train_batch_size", "generation_batch_size",
                                            "max_new_tokens")},
        "parameters": model.run_info["parameters"],
        "training": train_steps(model, examples, args.batches, config["train_batch_size"], device),
        "peak_rss_gb_after_training": round(peak_rss_gb(), 2),
    }
    if device.type == "cuda":
        result["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1024**3, 2)
    test = without_labels(sessions_from_dataset(test_data.dataset)[: args.sessions])
    result["generation_unmerged"] = generation_speed(model, test, config["generation_batch_size"])
    model.llm = model.llm.merge_and_unload()
    model.restart_backend()  # the next generation opens it with the merged student
    result["generation_merged"] = generation_speed(model, test, config["generation_batch_size"])
    result["peak_rss_gb"] = round(peak_rss_gb(), 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
