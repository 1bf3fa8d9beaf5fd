"""``bundlellm plan``: what training a student will cost, before training it.

With the data (``-c CFG``): the student is built as a run builds it, its training examples are
made by the model's own ``training_examples``, and a few real training steps (``--warmup-steps``)
are timed. Parameters, trainable parameters, the memory estimate of
:mod:`recbole_bundlellm.llm.footprint` at the longest padded batch, tokens per epoch and a time
estimate are reported, with the peak memory the warm-up measured (CUDA's allocator, or the
process's resident memory sampled on a CPU).

With ``--model-config config.json``: the architecture is built on the meta device (no weights,
no memory: an 8B model plans on a laptop), LoRA attached as configured, and the estimate made at
``--seq-len`` tokens; nothing is timed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from recbole_bundlellm.config import BundleConfig
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.llm.batches import epoch_batches
from recbole_bundlellm.llm.footprint import (
    GIB, Batch, MemoryEstimate, Shape, Training, adapted_widths, estimate, meta_model, read_config)
from recbole_bundlellm.llm.lora import LoraSettings, adapted_layers, attach_lora, target_modules_setting
from recbole_bundlellm.models.students.bundle_sft import BundleSFT
from recbole_bundlellm.models.students.pair_sft import PairSFT
from recbole_bundlellm.models.students.route_dk import RouteDK

#: ``--seq-len``'s default on the meta device when ``max_seq_tokens`` is ~ (the model's context).
DEFAULT_META_LENGTH = 512


class PlanError(BundleLLMError, ValueError):
    """A plan that cannot be made as asked (a model that does not train, a bad option)."""


@dataclass
class PlanReport:
    """What ``bundlellm plan`` prints (and ``--json`` writes)."""

    model: str
    student: str
    device: str
    dtype: str
    parameters: int
    trainable: int
    lora: str
    batch: Batch
    memory: MemoryEstimate
    gradient_checkpointing: bool
    epoch: dict[str, int] = field(default_factory=dict)
    warmup: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "student": self.student, "device": self.device, "dtype": self.dtype,
                "parameters": self.parameters, "trainable": self.trainable, "lora": self.lora,
                "batch": vars(self.batch), "gradient_checkpointing": self.gradient_checkpointing,
                "memory_bytes": self.memory.to_json(), "epoch": self.epoch, "warmup": self.warmup,
                "notes": self.notes}

    def format(self) -> str:
        gib = _size
        m = self.memory
        share = 100 * self.trainable / max(self.parameters, 1)
        lines = [f"plan: {self.model}, student {self.student}, {self.dtype} on {self.device}",
                 f"parameters            {self.parameters:,}",
                 f"trainable parameters  {self.trainable:,} ({share:.2f}%; {self.lora})",
                 f"memory estimate at the longest batch ({self.batch.sequences} x {self.batch.length} tokens, "
                 f"{self.batch.target_tokens} target tokens; gradient checkpointing "
                 f"{'on' if self.gradient_checkpointing else 'off'}):",
                 f"  weights             {gib(m.weights)}",
                 f"  adapters            {gib(m.adapters)}",
                 f"  gradients           {gib(m.gradients)}",
                 f"  optimizer (AdamW)   {gib(m.optimizer)}",
                 f"  activations         {gib(m.activations)}",
                 f"  total               {gib(m.total)}"]
        if self.epoch:
            e = self.epoch
            lines.append(f"tokens per epoch      {e['tokens']:,} ({e['padded_tokens']:,} padded, {e['target_tokens']:,} "
                         f"target) in {e['examples']:,} examples, {e['batches']:,} batches, "
                         f"{e['optimizer_steps']:,} optimizer steps")
        if self.warmup:
            w = self.warmup
            lines.append(f"warm-up               {int(w['steps'])} steps: {w['seconds_per_step']:.3f} s/step, "
                         f"{w['tokens_per_second']:,.0f} tokens/s -> about {_duration(w['epoch_seconds'])} per epoch, "
                         f"{_duration(w['training_seconds'])} for {int(w['epochs'])} epoch(s)")
            lines.append(f"measured peak         {_size(w['measured_peak_bytes']).strip()} above the loaded model "
                         f"({w['measured_by']}) vs estimated {_size(m.training).strip()} (gradients + optimizer + "
                         "activations)")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _size(n: float) -> str:
    return f"{n / GIB:9.3f} GiB" if n >= GIB else f"{n / 1024**2:9.1f} MiB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _student_class(config: BundleConfig) -> type:
    cls = config.spec.model_class
    if not (isinstance(cls, type) and issubclass(cls, BundleSFT)):
        raise PlanError(f"plan estimates the training of a student that fine-tunes (BundleSFT, PairSFT, RouteDK "
                        f"or a subclass); {config.spec.name} does not")
    return cls


def _lora_text(config: BundleConfig, blocks: int, lowest: int, read: int) -> str:
    if config["full_finetune"]:
        return "full fine-tuning"
    where = "every block" if config["lora_layers"] is None else f"blocks {lowest + 1}-{read} of {blocks}"
    return f"LoRA rank {config['lora_rank']} on {config['lora_target_modules']}, {where}"


def _training(config: BundleConfig, llm: Any, cls: type, dtype: torch.dtype,
              cpu: bool = False) -> tuple[Training, int, int]:
    """The training settings of the estimate, the lowest adapted block (0-based) and the read block."""
    from recbole_bundlellm.fusion.representation import decoder_layers

    blocks = decoder_layers(llm)
    read = cls.read_layer(_ConfigOnly(config), llm)
    lowest = read - config["lora_layers"] if config["lora_layers"] is not None else 0
    lowest = max(lowest, 0)
    width, count, rank = adapted_widths(llm, blocks[read - 1])
    kernel = getattr(getattr(llm, "config", None), "_attn_implementation", None) or config["attn_implementation"]
    training = Training(dtype=dtype, trained_blocks=read - lowest, adapted_inputs=width, adapted_projections=count,
                        rank=rank, lora_dropout=float(config["lora_dropout"]) if count else 0.0,
                        gradient_checkpointing=bool(config["gradient_checkpointing"]),
                        eager_attention=kernel == "eager", lm_head=not issubclass(cls, PairSFT), cpu=cpu)
    return training, lowest, read


def _architecture(llm: Any) -> str:
    """The class name of the causal LM under its adapters."""
    return type(llm.get_base_model() if hasattr(llm, "get_base_model") else llm).__name__


class _ConfigOnly:
    """``read_layer`` of a student class with only its configuration (the meta plan builds no student)."""

    def __init__(self, config: BundleConfig) -> None:
        self.config = config


# --------------------------------------------------------------------------- the meta device


def plan_meta(config: BundleConfig, model_config: str | Path, seq_len: int | None = None) -> PlanReport:
    """The estimate for the architecture of ``model_config`` built on the meta device."""
    cls = _student_class(config)
    if issubclass(cls, RouteDK):
        raise PlanError("plan --model-config estimates LoRA training (BundleSFT, PairSFT); RouteDK trains a router "
                        "over trained experts: plan it with the data instead")
    if config["load_in_4bit"] and config["full_finetune"]:
        raise PlanError("load_in_4bit trains adapters on frozen 4-bit weights; full_finetune cannot train them")
    hf_config = read_config(model_config)
    name = str(config["llm_dtype"]).lower()
    # auto: what a GPU would choose (the meta plan is for a machine that is not this one).
    dtype = torch.bfloat16 if name == "auto" else _dtype(name)
    if config["attn_implementation"] is not None:
        hf_config._attn_implementation = config["attn_implementation"]
    llm = meta_model(hf_config, dtype)
    with torch.device("meta"):  # the adapters too: an 8B model's are 170 MB
        llm = _trainable(llm, config, cls)
    training, lowest, read = _training(config, llm, cls, dtype)
    notes = []
    length = seq_len or config["max_seq_tokens"]
    if length is None:
        length = DEFAULT_META_LENGTH
        notes.append(f"max_seq_tokens is ~ (the model's context): {length} tokens assumed; give --seq-len")
    targets = int(config["max_new_tokens"]) * int(config["train_batch_size"]) if training.lm_head else 0
    batch = Batch(int(config["train_batch_size"]), int(length), targets)
    memory = estimate(llm, Shape.of(hf_config), batch, training, four_bit=bool(config["load_in_4bit"]))
    notes.append("built on the meta device, estimated for a CUDA GPU: no weights were read and nothing was timed")
    return PlanReport(config.spec.name, f"{Path(model_config)} ({_architecture(llm)})", "meta",
                      str(dtype).removeprefix("torch."), sum(p.numel() for p in llm.parameters()),
                      sum(p.numel() for p in llm.parameters() if p.requires_grad),
                      _lora_text(config, Shape.of(hf_config).layers, lowest, read), batch, memory,
                      training.gradient_checkpointing, notes=notes)


def _dtype(name: str) -> torch.dtype:
    from recbole_bundlellm.llm import resolve_device_dtype

    return resolve_device_dtype("cpu", name)[1]


def _trainable(llm: Any, config: BundleConfig, cls: type) -> Any:
    """``llm`` with the student's adapters (as :meth:`BundleSFT.trainable_model` attaches them)."""
    if config["full_finetune"]:
        return llm.requires_grad_(True)
    read = cls.read_layer(_ConfigOnly(config), llm)
    settings = LoraSettings(config["lora_rank"], config["lora_alpha"], config["lora_dropout"],
                            target_modules_setting(config["lora_target_modules"]),
                            adapted_layers(config["lora_layers"], read))
    return attach_lora(llm, settings)


# --------------------------------------------------------------------------- with the data


def plan_with_data(config: BundleConfig, warmup_steps: int = 3) -> PlanReport:
    """Build the student and its training examples as a run does, estimate, then time a warm-up."""
    import recbole_bundlellm  # noqa: F401  (compat patches before recbole)
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_bundlellm.data import check_prepared
    from recbole_bundlellm.data.sessions import sessions_from_dataset

    cls = _student_class(config)
    if warmup_steps < 0:
        raise PlanError(f"--warmup-steps must be 0 or more; got {warmup_steps}")
    check_prepared(config)
    init_seed(config["seed"], config["reproducibility"])
    train_data, _, _ = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    model = cls(config, train_data.dataset)
    model = model.to(model.device)
    train = sessions_from_dataset(train_data.dataset)
    model.fit_bundles(train)
    examples = model.training_examples(train)
    if not examples:
        raise PlanError("no training session has ground-truth bundles: nothing to plan")
    dtype = model.loaded_llm.loaded.dtype
    training, lowest, read = _training(config, model.llm, cls, dtype, cpu=torch.device(model.device).type == "cpu")
    batches = epoch_batches(examples, config["train_batch_size"], config["seed"], 0)
    padded = [len(b) * max(len(examples[i]) for i in b) for b in batches]
    largest = batches[max(range(len(batches)), key=padded.__getitem__)]
    targets = sum(len(getattr(examples[i], "target_ids", ())) for i in largest) if training.lm_head else 0
    batch = Batch(len(largest), max(len(examples[i]) for i in largest), targets)
    memory = estimate(model, Shape.of(model.llm.config), batch, training, four_bit=bool(config["load_in_4bit"]))
    steps = -(-len(batches) // int(config["gradient_accumulation_steps"]))
    epoch = {"examples": len(examples), "tokens": sum(len(e) for e in examples), "padded_tokens": sum(padded),
             "target_tokens": sum(len(getattr(e, "target_ids", ())) for e in examples),
             "batches": len(batches), "optimizer_steps": steps}
    report = PlanReport(config.spec.name, f"{config['llm_model']} ({_architecture(model.llm)})", str(model.device), str(dtype).removeprefix("torch."),
                        sum(p.numel() for p in model.parameters()),
                        sum(p.numel() for p in model.parameters() if p.requires_grad),
                        _lora_text(config, Shape.of(model.llm.config).layers, lowest, read), batch, memory,
                        training.gradient_checkpointing, epoch=epoch)
    if issubclass(cls, PairSFT) and config["pair_probe_steps"]:
        report.notes.append("PairSFT's head probe (pair_probe_steps on the frozen states) comes before training "
                            "and is not in the time estimate")
    if warmup_steps:
        order = [largest] + [b for b in batches if b is not largest][: warmup_steps - 1]
        report.warmup = warm_up(model, examples, order, float(config["learning_rate"]))
        per_token = report.warmup["seconds"] / max(report.warmup["padded_tokens"], 1)
        report.warmup["epoch_seconds"] = round(per_token * sum(padded), 1)
        report.warmup["epochs"] = int(config["epochs"])
        report.warmup["training_seconds"] = round(report.warmup["epoch_seconds"] * int(config["epochs"]), 1)
    return report


def warm_up(model: Any, examples: list, order: list[list[int]], learning_rate: float) -> dict[str, float]:
    """Real training steps (forward, backward, AdamW) on the batches ``order``: seconds per step and
    tokens/s (the first step, which warms the kernels up, is not timed unless it is the only one),
    and the peak memory above the loaded model."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate)
    device = torch.device(model.device)
    calibrate = getattr(model, "calibrate", None)
    if callable(calibrate):  # PairSFT standardises its head's inputs once, before its first step
        calibrate(getattr(model, "calibration_examples", []))
    model.train()
    timed = order[1:] if len(order) > 1 else order
    seconds = 0.0
    with PeakMemory(device) as peak:
        for index, ids in enumerate(order):
            batch = model.collate([examples[i] for i in ids])
            _sync(device)
            start = time.perf_counter()
            loss, _ = model.calculate_loss(batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _sync(device)
            if index > 0 or len(order) == 1:
                seconds += time.perf_counter() - start
    padded = sum(len(ids) * max(len(examples[i]) for i in ids) for ids in timed)
    return {"steps": len(order), "timed_steps": len(timed), "seconds": round(seconds, 4),
            "seconds_per_step": round(seconds / len(timed), 4), "padded_tokens": padded,
            "tokens_per_second": round(padded / seconds, 1) if seconds else 0.0,
            "measured_peak_bytes": peak.bytes, "measured_by": peak.kind}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """The peak memory a block adds: CUDA's allocator peak on a GPU, else the resident memory of the
    process sampled every 2 ms (``ru_maxrss`` would keep the peak of loading the model)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.bytes, self.kind = device, 0, ""
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.kind = "CUDA allocator peak"
            return self
        self.kind = "resident memory, sampled"
        self._base = self._peak = _rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, _rss())

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.bytes = int(torch.cuda.max_memory_allocated(self.device) - self._base)
            return
        self._stop.set()
        self._thread.join()
        self.bytes = int(max(self._peak, _rss()) - self._base)


def _rss() -> int:
    """This process's resident memory in bytes (Linux's /proc; 0 where there is none)."""
    import os

    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def plan(config: BundleConfig, *, warmup_steps: int = 3, model_config: str | Path | None = None,
         seq_len: int | None = None) -> PlanReport:
    """``bundlellm plan``: on the meta device with ``model_config``, else with the data."""
    if seq_len is not None and seq_len < 1:
        raise PlanError(f"--seq-len must be 1 or more; got {seq_len}")
    if model_config is not None:
        return plan_meta(config, model_config, seq_len)
    if seq_len is not None:
        raise PlanError("--seq-len is for --model-config; with the data the examples' own lengths are used")
    return plan_with_data(config, warmup_steps)
