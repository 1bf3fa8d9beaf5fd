"""Write the papers' studies as one YAML per run under configs/<domain>/studies/ (rerun after editing).

- format/<knowledge>_<use>.yaml: knowledge format (raw, patterns, rules, thoughts) x utilisation
  (icl, sft, icl_sft), every distilled session's knowledge (``sampling: ~``);
- quantity/<sampler>_r<ratio>_<use>.yaml: sampler (random, length, diversity, difficulty) x ratio
  (0.1, 0.3, 0.5, 0.7) for icl and sft with one knowledge type (patterns: no teacher needed);
- multi/domains_rules_<use>.yaml: rules of all three domains (multi-domain accumulation);
- multi/formats_<use>.yaml: patterns + rules + thoughts together (multi-format aggregation).

Each runs with ``bundlellm run -c <file>``; a BundleSFT run reuses the adapter in its output
folder when the fingerprint matches.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

DOMAINS = ("electronic", "clothing", "food")
KNOWLEDGE = {"raw": [], "patterns": ["patterns"], "rules": ["rules"], "thoughts": ["thoughts"]}
USES = ("icl", "sft", "icl_sft")
SAMPLERS = ("random", "length", "diversity", "difficulty")
RATIOS = (0.1, 0.3, 0.5, 0.7)
QUANTITY_KNOWLEDGE = "patterns"
SEED = 2024
ROOT = Path(__file__).resolve().parents[1] / "configs"


#: Settings a run needs beyond the defaults, with the reason written above them in its YAML.
THOUGHTS_ICL = ("The examples show their reasoning before the answer and the student imitates it: room for both\n"
                "(with 48 tokens, 120 of 180 Electronic answers were cut off inside the reasoning).",
                {"max_new_tokens": 224})
THOUGHTS_SFT = ("The target is the thought (\"Reasoning: ...\") then the answer: room for both, and no label-bias\n"
                "grid (a bias on label letters would also bend the reasoning's words); validation on 60 sessions\n"
                "keeps the long generations of each epoch's validation affordable on a CPU.",
                {"max_new_tokens": 224, "label_bias_grid": [], "valid_max_sessions": 60})
ICL_SFT = ("Greedy decoding, no label-bias grid: on every sft run the grid chose no bias (0 / 0), and with\n"
           "retrieved examples in the prompt each of its 9 validation passes takes ~3 min on 2 cores.\n"
           "Three retrieved sessions make a prompt of ~860 tokens: training examples get 768 tokens and\n"
           "test prompts 720, so knowledge items give way (lowest retrieval score first) alike at\n"
           "training and test, and the instruction is never cut. Batches of 4, two per step: the\n"
           "optimizer sees 8 sessions per step as in every sft run, with half the activation memory.",
           {"label_bias_grid": [], "max_seq_tokens": 768, "max_prompt_tokens": 720, "train_batch_size": 4,
            "gradient_accumulation_steps": 2})


def _extras(use: str, knowledge: list[str]) -> list[tuple[str, dict]]:
    extras = [ICL_SFT] if use == "icl_sft" else []
    if "thoughts" in knowledge:
        extras.append(THOUGHTS_ICL if use == "icl" else THOUGHTS_SFT)
    return extras


def _run(domain: str, study: str, name: str, use: str, knowledge: list[str], sampling: dict | None,
         comment: str) -> tuple[Path, str]:
    config = {
        "model": "BundleLLM" if use == "icl" else "BundleSFT",
        "dataset": domain,
        "run_name": f"{study}-{name}",
        "output_dir": f"outputs/{domain}/studies/{study}/{name}",
        "adaptation": use,
        "knowledge_use": knowledge,
        "sampling": sampling,
    }
    if use == "icl":
        # The prompted student reads the same compact prompt the fine-tuned one learns.
        config.update(prompt_format="compact", show_categories=True, max_title_words=6, stop_strings=["]]"],
                      max_new_tokens=48)
    path = ROOT / domain / "studies" / study / f"{name}.yaml"
    header = f"# {comment}\n#   bundlellm run -c configs/{domain}/studies/{study}/{name}.yaml\n"
    extras = _extras(use, knowledge)
    settings = {k: v for _, more in extras for k, v in more.items()}
    for key in settings:
        config.pop(key, None)  # written once, below its reason
    text = header + yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
    text += "".join(f"# {line}\n" for why, _ in extras for line in why.splitlines())
    text += "".join(f"{key}: {json.dumps(value)}\n" for key, value in settings.items())
    return path, text


def study_files() -> dict[Path, str]:
    files: dict[Path, str] = {}
    for domain in DOMAINS:
        for kind, knowledge in KNOWLEDGE.items():
            for use in USES:
                path, text = _run(domain, "format", f"{kind}_{use}", use, knowledge, None,
                                  f"Knowledge format '{kind}' x utilisation '{use}' on {domain}.")
                files[path] = text
        for sampler in SAMPLERS:
            for ratio in RATIOS:
                for use in ("icl", "sft"):
                    sampling = {"sampler": sampler, "ratio": ratio, "seed": SEED}
                    path, text = _run(domain, "quantity", f"{sampler}_r{ratio:g}_{use}", use, [QUANTITY_KNOWLEDGE],
                                      sampling, f"Knowledge quantity: {QUANTITY_KNOWLEDGE} of {ratio:.0%} of the "
                                      f"training sessions chosen by the {sampler} sampler, used by {use}, on {domain}.")
                    files[path] = text
        for use in ("icl", "sft"):
            path, text = _run(domain, "multi", f"domains_rules_{use}", use, ["rules"],
                              {"sampler": "random", "ratio": 0.7, "seed": SEED, "domains": list(DOMAINS)},
                              f"Multi-domain accumulation: rules of all three domains for a {domain} student ({use}).")
            files[path] = text
            path, text = _run(domain, "multi", f"formats_{use}", use, ["patterns", "rules", "thoughts"], None,
                              f"Multi-format aggregation: patterns + rules + thoughts together ({use}) on {domain}.")
            files[path] = text
    return files


def main() -> None:
    # No options: the parser is there so that --help explains instead of rewriting every config.
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    for path, text in study_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    print(f"wrote {len(study_files())} study configs under {ROOT}")


if __name__ == "__main__":
    main()
