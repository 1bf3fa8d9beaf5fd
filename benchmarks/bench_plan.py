"""Check ``bundlellm plan``'s memory estimate against measured memory, and plan an 8B-class model.

    .venv/bin/python benchmarks/bench_plan.py [--batch-sizes 2,8] [--warmup-steps 3]
                                              [--data-path dataset] [--out benchmarks/results/plan_estimate.json]

1. The embedded student (SmolLM2-135M-Instruct, BundleSFT's defaults, LoRA rank 16 on every
   linear projection) on the prepared Electronic data, on the CPU, once per batch size, each in a
   fresh process (so ``ru_maxrss`` starts clean): the plan's estimate of what a training step adds
   to the loaded model (gradients + AdamW states + activations at the longest batch) against
   (a) the resident memory sampled during the warm-up above its start and (b) the ``ru_maxrss``
   delta around the warm-up; the warm-up's longest batch is the one estimated.
2. A Llama-3-8B-shaped ``config.json`` written by this script (no download) planned on the meta
   device in bfloat16: LoRA, LoRA with gradient checkpointing, QLoRA (4-bit) with checkpointing.

Writes one JSON; nothing is asserted (tests never time things).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

LLAMA_8B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
            "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": False, "hidden_act": "silu"}


def _config(model: str, overrides: dict):
    from recbole_bundlellm.config import BundleConfig

    return BundleConfig(model, "electronic", [], overrides)


def measure_one(batch_size: int, warmup_steps: int, data_path: str) -> dict:
    """In this (fresh) process: plan the embedded student with a warm-up, ru_maxrss around it."""
    import recbole_bundlellm.commands.plan as plan_module

    marks: dict[str, int] = {}
    real_warm_up = plan_module.warm_up

    def warm_up(*args, **kwargs):  # ru_maxrss just around the timed steps
        marks["before"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result = real_warm_up(*args, **kwargs)
        marks["after"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return result

    plan_module.warm_up = warm_up
    config = _config("BundleSFT", {"data_path": data_path, "llm_device": "cpu", "train_batch_size": batch_size,
                                   "show_progress": False})
    report = plan_module.plan(config, warmup_steps=warmup_steps).to_json()
    estimated = report["memory_bytes"]["training"]
    measured = report["warmup"]["measured_peak_bytes"]
    return {"batch_size": batch_size, "plan": report,
            "estimated_training_bytes": estimated,
            "measured_sampled_rss_bytes": measured,
            "measured_ru_maxrss_delta_bytes": marks["after"] - marks["before"],
            "estimate_over_sampled": round(estimated / measured, 3) if measured else None}


def meta_plans(folder: Path) -> list[dict]:
    """The 8B-shaped config planned on the meta device, three ways."""
    from recbole_bundlellm.commands.plan import plan

    (folder / "config.json").write_text(json.dumps(LLAMA_8B, indent=2))
    rows = []
    for name, extra in (("lora", {}), ("lora+checkpointing", {"gradient_checkpointing": True}),
                        ("qlora+checkpointing", {"gradient_checkpointing": True, "load_in_4bit": True})):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        report = plan(_config("BundleSFT", {"llm_dtype": "bfloat16", "train_batch_size": 8, **extra}),
                      model_config=folder / "config.json", seq_len=512).to_json()
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        rows.append({"variant": name, "settings": extra, "plan": report, "ru_maxrss_growth_bytes": grown})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", default="2,8")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--data-path", default=str(REPO / "dataset"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "plan_estimate.json")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process: one batch size
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure_one(args.one, args.warmup_steps, args.data_path)))
        return
    import torch

    measured = []
    for size in [int(s) for s in args.batch_sizes.split(",")]:
        out = subprocess.run([sys.executable, __file__, "--one", str(size), "--warmup-steps", str(args.warmup_steps),
                              "--data-path", args.data_path], capture_output=True, text=True, check=True)
        measured.append(json.loads(out.stdout.strip().splitlines()[-1]))
        row = measured[-1]
        print(f"batch {size}: estimated {row['estimated_training_bytes'] / 2**20:.0f} MiB, sampled "
              f"{row['measured_sampled_rss_bytes'] / 2**20:.0f} MiB, ru_maxrss delta "
              f"{row['measured_ru_maxrss_delta_bytes'] / 2**20:.0f} MiB", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        meta = meta_plans(Path(tmp))
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "torch_threads": torch.get_num_threads(), "device": "cpu"},
              "what": "plan's estimate of what a training step adds to the loaded model (gradients + AdamW "
                      "states + activations at the longest batch) vs the memory measured around a warm-up",
              "embedded_student": measured, "llama_8b_shaped_on_meta": meta, "llama_8b_config": LLAMA_8B}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
