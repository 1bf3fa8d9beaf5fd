"""Why a fine-tuned tags student fails: what it predicts for each label under teacher forcing.

    .venv/bin/python benchmarks/diagnose_tags.py -c CONFIG --adapter RUN/adapter [--key=value ...]
                                                 [--out benchmarks/results/diagnose_tags.json]

For a trained BundleSFT adapter (``prompt_format: tags``), every training and test session's
target is fed to the student with the gold prefix (teacher forcing), and each *label* token
(``A``, ``B``, ..., ``-`` after a product number) is scored: accuracy of the student's argmax,
the accuracy of always answering the most common label, and the confusion of gold vs predicted
label classes (``-`` no bundle, ``A`` first bundle, ``new`` a later letter). A student that has
learned the structure beats the majority label on test; one that learned only the syntax does not.
Also reports the mean loss on number tokens (unpredictable in a shuffled answer) vs label tokens.

Writes one JSON; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

import recbole_bundlellm  # noqa: E402,F401
import torch  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402

from recbole_bundlellm.llm.batches import IGNORE_INDEX, collate  # noqa: E402
import yaml  # noqa: E402

from recbole_bundlellm.config import BundleConfig, parse_overrides  # noqa: E402
from recbole_bundlellm.data.sessions import sessions_from_dataset  # noqa: E402
from recbole_bundlellm.generation.prompt import NO_BUNDLE, TAG_LABELS  # noqa: E402


def label_class(text: str) -> str | None:
    text = text.strip().lstrip(":")
    if text == NO_BUNDLE:
        return "-"
    if text == TAG_LABELS[0]:
        return "A"
    if len(text) == 1 and text in TAG_LABELS[1:]:
        return "new"
    return None


def score(model, examples, batch_size: int = 8) -> dict:
    tok = model.tokenizer
    hits = Counter()
    confusion: Counter = Counter()
    loss_by_kind: dict[str, list[float]] = {"label": [], "number": [], "other": []}
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start:start + batch_size], model.pad_id())
            logits = model.llm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2).float(), labels,
                                                       ignore_index=IGNORE_INDEX, reduction="none")
            pred = logits.argmax(-1)
            for row in range(labels.shape[0]):
                for t in (labels[row] != IGNORE_INDEX).nonzero().flatten().tolist():
                    gold_text = tok.decode([int(labels[row, t])])
                    gold = label_class(gold_text)
                    kind = "label" if gold else "number" if gold_text.strip().isdigit() else "other"
                    loss_by_kind[kind].append(float(losses[row, t]))
                    if gold is None:
                        continue
                    guess = label_class(tok.decode([int(pred[row, t])])) or "other"
                    hits["labels"] += 1
                    hits["correct"] += guess == gold
                    confusion[f"{gold}->{guess}"] += 1
    golds = Counter(k.split("->")[0] for k in confusion.elements())
    majority = golds.most_common(1)[0] if golds else ("-", 0)
    return {"label_tokens": hits["labels"], "label_accuracy": round(hits["correct"] / max(hits["labels"], 1), 4),
            "majority_label": majority[0], "majority_accuracy": round(majority[1] / max(hits["labels"], 1), 4),
            "confusion": dict(sorted(confusion.items())),
            "mean_loss": {k: round(sum(v) / len(v), 4) if v else None for k, v in loss_by_kind.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "diagnose_tags.json")
    args, rest = parser.parse_known_args()
    overrides = parse_overrides(rest)
    named = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    config = BundleConfig(overrides.get("model", named["model"]), overrides.get("dataset", named.get("dataset")),
                          [args.config], {**overrides, "adapter_path": args.adapter})
    dataset = create_dataset(config)
    train_data, _, test_data = data_preparation(config, dataset)
    model = config.spec.model_class(config, train_data.dataset)
    train = sessions_from_dataset(train_data.dataset)
    test = sessions_from_dataset(test_data.dataset)
    model.fit_bundles(train)
    model.load_adapter(Path(args.adapter))
    result = {"config": args.config, "adapter": args.adapter, "answer_order": config["answer_order"],
              "train": score(model, model.training_examples(train)),
              "test": score(model, model.training_examples(test))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
