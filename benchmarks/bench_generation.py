"""Benchmark the embedded student LLM: GGUF conversion, cached load, batched vs sequential generation.

    .venv/bin/python benchmarks/bench_generation.py [--out benchmarks/results/generation.json]

Conversion is measured in a child process on an empty temporary cache (so it really converts);
the cached load and generation in this process, against the normal cache ($BUNDLELLM_CACHE or
~/.cache/recbole_bundlellm), converting there first if it is empty. Prompts are synthetic
AICL-style sessions (system + products dict + task) of about --prompt-tokens tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recbole_bundlellm.data.sessions import Session  # noqa: E402
from recbole_bundlellm.generation.prompt import build_messages  # noqa: E402

BRANDS = ["Anker", "Samsung", "Logitech", "Sony", "Belkin", "UGREEN", "JBL", "SanDisk", "TP-Link"]
THINGS = [
    "USB-C Fast Charger 65W GaN Wall Adapter", "Wireless Bluetooth Over-Ear Headphones",
    "Braided Lightning Cable 6ft 2-Pack", "Silicone Phone Case with Kickstand",
    "Tempered Glass Screen Protector 3-Pack", "Portable Power Bank 20000mAh",
    "Ergonomic Wireless Mouse Silent Click", "Mechanical Gaming Keyboard RGB Backlit",
    "microSD Card 128GB with Adapter", "Dual Band WiFi Range Extender",
    "Laptop Sleeve 15.6 inch Water Resistant", "HDMI 2.1 Cable 8K 10ft",
]


def rss_mb() -> float:
    """Current resident set size (Linux /proc), in MiB."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def cpu_busy_fraction(seconds: float = 2.0) -> float:
    """Share of all CPU time spent busy over a short window (Linux /proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    try:
        idle1, total1 = sample()
        time.sleep(seconds)
        idle2, total2 = sample()
    except OSError:
        return float("nan")
    return 1.0 - (idle2 - idle1) / max(total2 - total1, 1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_prompts(tokenizer, count: int, prompt_tokens: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """AICL-like chats, products added until the rendered prompt reaches about prompt_tokens."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        titles: list[str] = []
        while True:
            titles.append(f"{rng.choice(BRANDS)} {rng.choice(THINGS)}")
            session = Session("bench", tuple(f"i{k}" for k in range(len(titles))), tuple(titles))
            messages = build_messages(session, max_title_words=None)
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            if len(tokenizer(text, add_special_tokens=False).input_ids) >= prompt_tokens:
                break
        prompts.append(messages)
    return prompts


def phase_convert() -> dict:
    """Run in a child: convert the embedded GGUF into an empty cache and report time and memory."""
    from recbole_bundlellm.llm import convert_gguf, embedded_gguf_path

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        folder = convert_gguf(embedded_gguf_path(), Path(tmp))
        seconds = time.perf_counter() - start
        size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
    return {"convert_seconds": seconds, "convert_peak_rss_mb": peak_rss_mb(), "converted_folder_mb": size}


def run_generation(generator_cls, config_cls, loaded, prompts, batch_size: int, new_tokens: int) -> tuple[dict, list]:
    generator = generator_cls(
        loaded.model, loaded.tokenizer, config_cls(max_new_tokens=new_tokens, batch_size=batch_size)
    )
    cpu_start = time.process_time()
    outputs = generator.generate(prompts)
    stats = dict(generator.stats)
    # About the thread count when the machine is ours alone; much less means others took CPUs.
    stats["process_cpu_per_wall_second"] = (time.process_time() - cpu_start) / stats["seconds"]
    stats["new_tokens_per_second"] = stats["new_tokens"] / stats["seconds"]
    stats["seconds_per_prompt"] = stats["seconds"] / stats["prompts"]
    return stats, outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "generation.json")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=300)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", default="8,1", help="comma-separated, e.g. 8,4,1")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--skip-convert", action="store_true", help="do not time a fresh conversion")
    parser.add_argument("--phase", choices=["convert"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.phase == "convert":
        print(json.dumps(phase_convert()))
        return 0
    busy = cpu_busy_fraction()
    if busy > 0.1:
        print(f"warning: CPUs {busy:.0%} busy before start; timings will be inflated", flush=True)

    result: dict = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            # Other processes on a 2-core machine distort CPU timings badly (seen: 8x); keep
            # the evidence. Sampled before anything of ours runs.
            "cpu_busy_before_start": busy,
        },
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "phase"},
    }
    if not args.skip_convert:
        child = subprocess.run(
            [sys.executable, __file__, "--phase", "convert"],
            check=True, capture_output=True, text=True,
        )
        result["conversion"] = json.loads(child.stdout.strip().splitlines()[-1])
        print("conversion:", result["conversion"], flush=True)

    rss_start = rss_mb()
    start = time.perf_counter()
    import torch

    from recbole_bundlellm.generation.generator import BatchGenerator, GenerationConfig
    from recbole_bundlellm.llm import convert_gguf, embedded_gguf_path, load_llm

    imports = time.perf_counter() - start
    start = time.perf_counter()
    convert_gguf(embedded_gguf_path())  # no-op when the normal cache already holds it
    ensure_cache = time.perf_counter() - start
    loaded = load_llm(device=args.device, dtype=args.dtype)
    rss_after_load = rss_mb()
    result["load"] = {
        "import_seconds": imports,
        "cache_check_or_convert_seconds": ensure_cache,
        "cached_load_seconds_first_in_process": loaded.load_seconds,
        "rss_before_mb": rss_start,
        "rss_after_load_mb": rss_after_load,
        "device": str(loaded.device),
        "dtype": str(loaded.dtype),
        "torch_threads": torch.get_num_threads(),
        "folder": str(loaded.path),
    }
    print("load:", result["load"], flush=True)

    prompts = make_prompts(loaded.tokenizer, args.prompts, args.prompt_tokens)
    # Warm-up: the first forward pass pays one-off allocation and kernel selection costs.
    run_generation(BatchGenerator, GenerationConfig, loaded, prompts[:1], 1, 4)
    runs, outputs = {}, {}
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        runs[f"batch_{batch_size}"], outputs[batch_size] = run_generation(
            BatchGenerator, GenerationConfig, loaded, prompts, batch_size, args.new_tokens
        )
        print(f"batch {batch_size}:", runs[f"batch_{batch_size}"], flush=True)
    result["generation"] = runs
    sizes = sorted(outputs)
    if len(sizes) > 1:
        reference = outputs[sizes[0]]
        result["generation"]["identical_outputs_vs_smallest_batch"] = {
            f"batch_{b}": sum(x == y for x, y in zip(outputs[b], reference)) for b in sizes[1:]
        }
        slow, fast = runs[f"batch_{sizes[0]}"], runs[f"batch_{sizes[-1]}"]
        result["generation"]["speedup_largest_vs_smallest_batch"] = slow["seconds"] / fast["seconds"]
    result["generation"]["sample_output"] = outputs[sizes[0]][0][0]
    result["peak_rss_mb_load_and_generation"] = peak_rss_mb()
    # The first load in a process also imports transformers' model code; a second one does not.
    # Done last so its extra copy of the weights does not count in the peak above.
    warm = load_llm(device=args.device, dtype=args.dtype, use_cache=False)
    result["load"]["cached_load_seconds_warm"] = warm.load_seconds

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
