"""SFTTrainer: RecBole's ``Trainer`` for students that learn (LoRA or full fine-tuning).

RecBole's ``fit`` runs as is (epochs, validation every ``eval_step``, early stopping on
``valid_metric``, best-epoch choice); this class overrides only what differs:

- ``_train_epoch``: the causal-LM loss on answer tokens over length-bucketed batches of the
  model's training examples (built from the training *sessions*: RecBole's loader yields
  item-level interactions, which are not what a bundle student learns from); gradient
  accumulation; a learning-rate schedule; resumable checkpoints every ``checkpoint_steps``.
- ``_valid_epoch`` / ``evaluate``: bundle generation scored by RecBole's ``Evaluator``.
- ``_save_checkpoint`` / ``resume_checkpoint``: safetensors holding only the trained tensors
  (RecBole's pickle the whole model, frozen base included).
- ``_build_optimizer``: the trainable parameters only.

Under ``torchrun`` each process trains on its share of the batches and the trained gradients are
averaged across processes before every step (what DistributedDataParallel does for these
parameters; done here because RecBole's DDP wrapper only takes GPU modules).
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import recbole_bundlellm  # noqa: F401  (compat patches before recbole)
from recbole.trainer import Trainer
from recbole.utils import calculate_valid_score

from recbole_bundlellm.llm.batches import SFTExample, epoch_batches
from recbole_bundlellm.llm.checkpoint import TrainingProgress, load_checkpoint, read_tensors, save_checkpoint
from recbole_bundlellm.llm.lora import DamagedAdapter, adapter_info, verify_weights
from recbole_bundlellm.data.sessions import sessions_from_dataset
from recbole_bundlellm.fileio import atomic_write_bytes
from recbole_bundlellm.progress import progress_bar
from recbole_bundlellm.settings import SettingsError
from recbole_bundlellm.training.trainer import BundleEvaluation, without_recbole_ddp

LAST, BEST, ADAPTER = "last.safetensors", "best.safetensors", "adapter"
SCHEDULES = ("linear", "cosine", "constant")


@dataclass(frozen=True)
class RunFolders:
    """Where a run builds its outputs (``stage``), where they end up (``out``), and where training
    keeps its resumable state (outside both: a killed run's stage is swept by the next run)."""

    stage: Path
    out: Path

    @property
    def training(self) -> Path:
        return self.out.with_name(self.out.name + ".training")


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 without torch.distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class SFTTrainer(BundleEvaluation, Trainer):
    """Fine-tunes a :class:`~recbole_bundlellm.models.students.bundle_sft.BundleSFT` and evaluates it."""

    trains = True

    def __init__(self, config: Any, model: Any) -> None:
        with without_recbole_ddp(config):
            super().__init__(config, model)
        self._init_evaluation()
        if config["lr_schedule"] not in SCHEDULES:
            raise SettingsError(f"lr_schedule '{config['lr_schedule']}' is not one of {', '.join(SCHEDULES)}")
        self.run_folders: RunFolders | None = None
        self.examples: list[SFTExample] = []
        self.fingerprint = ""
        self.global_step = 0
        self.resume_epoch, self.resume_step = -1, 0
        self.total_steps = 1
        self.epoch_stats: list[dict[str, float]] = []

    # ------------------------------------------------------------------ folders

    @property
    def work_dir(self) -> Path:
        root = self.run_folders.training if self.run_folders else Path(self.checkpoint_dir) / "training"
        return root / self.fingerprint[:16]

    @property
    def adapter_dir(self) -> Path:
        return (self.run_folders.stage if self.run_folders else Path(self.checkpoint_dir)) / ADAPTER

    def _is_writer(self) -> bool:
        return rank_and_world()[0] == 0

    # ------------------------------------------------------------------ RecBole's hooks

    def _build_optimizer(self, **kwargs: Any) -> torch.optim.Optimizer | None:
        kwargs.setdefault("params", [p for p in self.model.parameters() if p.requires_grad])
        if not kwargs["params"]:
            return None  # a model with nothing to train (a mixture under fixed weights)
        return super()._build_optimizer(**kwargs)

    def fit(self, train_data: Any, valid_data: Any = None, verbose: bool = True, saved: bool = True,
            show_progress: bool = False, callback_fn: Any = None) -> tuple[float | None, dict | None]:
        """Train (or reuse a trained adapter of the same fingerprint), then keep the best epoch."""
        start = time.perf_counter()
        train = sessions_from_dataset(train_data.dataset)
        valid = self.valid_sessions(valid_data) if valid_data else []
        self.model.fit_bundles(train)
        self.examples = self.model.training_examples(train)
        self.fingerprint = self.model.fingerprint(self.examples, valid)
        self.model.run_info["fingerprint"] = self.fingerprint
        if not getattr(self.model, "trains", True):
            self.logger.info("%s has no parameters to train; tuning on valid only", type(self.model).__name__)
            self.model.run_info["training"] = {"trained": False}
            self.timing["fit_seconds"] = time.perf_counter() - start
            self._tune(valid)
            return None, None
        if self._reuse_adapter():
            self.timing["fit_seconds"] = time.perf_counter() - start
            self._tune(valid)
            return None, None
        before = getattr(self.model, "before_training", None)
        if callable(before):  # e.g. a head fitted on the frozen model first; a resumed run then loads its own
            before(self.examples)
        self._plan()
        last = self.work_dir / LAST
        if last.is_file():
            self.resume_checkpoint(last)
        elif callable(before) and valid_data is not None and self.eval_step > 0:
            self._validate_prepared(valid_data)
        self._sync_from_rank0()
        result = super().fit(train_data, valid_data if self.eval_step > 0 else None, verbose=verbose,
                             saved=saved, show_progress=show_progress, callback_fn=callback_fn)
        self._load_best()
        self._save_adapter()
        self.timing["fit_seconds"] = time.perf_counter() - start
        self.model.run_info["training"] = self._training_info()
        self._tune(valid)
        return result

    def _validate_prepared(self, valid_data: Any) -> None:
        """A model prepared before training (``before_training``: e.g. a head fitted on the frozen
        model) is scored on valid and kept as the best so far: an epoch must beat it to replace it,
        so training on few sessions cannot end below where it started."""
        score, result = self._valid_epoch(valid_data)
        self.best_valid_score, self.best_valid_result = score, result
        self.model.run_info["valid_before_training"] = {k: round(v, 4) for k, v in result.items()}
        self._save_checkpoint(-1)

    def _tune(self, valid: list) -> None:
        """Let the model calibrate its decoding on valid (labels visible), after training."""
        if not valid:
            return
        start = time.perf_counter()
        tuned = self.model.tune(valid)
        if tuned is not None:
            self.timing["tune_seconds"] = time.perf_counter() - start
            self.model.run_info["tuned"] = tuned  # what valid chose (and the grid), in metrics.json too
            self.logger.info("%s tuned on valid: %s", type(self.model).__name__, tuned)

    def _train_epoch(self, train_data: Any, epoch_idx: int, loss_func: Any = None,
                     show_progress: bool = False) -> float:
        """One pass over this process's share of the length-bucketed batches."""
        self.model.train()
        rank, world = rank_and_world()
        batches = epoch_batches(self.examples, self.config["train_batch_size"], self.config["seed"], epoch_idx)
        if world > 1:  # every process takes the same number of steps
            batches = batches[: len(batches) - len(batches) % world][rank::world]
        first = self.resume_step if epoch_idx == self.resume_epoch else 0
        if epoch_idx > 0 and first == 0 and self._is_writer():
            self._save_last(epoch_idx, 0)  # best score and early-stopping counter as of now
        accum = self.config["gradient_accumulation_steps"]
        total_loss, tokens, start = 0.0, 0, time.perf_counter()
        bar = progress_bar(total=len(batches), desc=f"SFT epoch {epoch_idx + 1}/{self.epochs}", unit="batch",
                           enabled=show_progress or None)
        bar.update(first)
        self.optimizer.zero_grad(set_to_none=True)
        for index in range(first, len(batches)):
            batch = self.model.collate([self.examples[i] for i in batches[index]])
            with torch.autocast(device_type=self.device.type, enabled=self.enable_amp):
                loss, n_tokens = self.model.calculate_loss(batch)
            self._check_nan(loss)
            (loss / accum).backward()
            total_loss += loss.item()
            tokens += n_tokens
            bar.update(1)
            if (index + 1) % accum == 0 or index + 1 == len(batches):
                self._step(world)
                if self.global_step % self.config["checkpoint_steps"] == 0 and index + 1 < len(batches):
                    self._save_last(epoch_idx, index + 1)
        bar.close()
        seconds = time.perf_counter() - start
        done = len(batches) - first
        sessions = sum(len(batches[i]) for i in range(first, len(batches)))
        self.epoch_stats.append({"epoch": epoch_idx + 1, "seconds": round(seconds, 2), "batches": done,
                                 "sessions_per_second": round(sessions / seconds, 3) if seconds else 0.0,
                                 "target_tokens_per_second": round(tokens / seconds, 2) if seconds else 0.0,
                                 "mean_loss": round(total_loss / max(done, 1), 4)})
        if self._is_writer():
            self._save_last(epoch_idx + 1, 0)
        return total_loss

    def _valid_epoch(self, valid_data: Any, show_progress: bool = False) -> tuple[float, dict[str, float]]:
        start = time.perf_counter()
        sessions = self.valid_sessions(valid_data)
        if getattr(self.model, "tunes_every_validation", False):
            # A model whose decoding is tuned on valid (a threshold over scores) is compared across
            # epochs as it will be used: an untuned threshold would pick the best-calibrated epoch.
            self.model.tune(sessions)
        result = self.evaluate_bundles(sessions)
        self.timing["valid_seconds"] = self.timing.get("valid_seconds", 0.0) + time.perf_counter() - start
        self.logger.info("valid: %s", {k: round(v, 4) for k, v in result.items()})
        return calculate_valid_score(result, self.valid_metric), result

    def evaluate(self, eval_data: Any, load_best_model: bool = True, model_file: str | None = None,
                 show_progress: bool = False) -> dict[str, float]:
        """Generate bundles for every session of ``eval_data`` with the best epoch's weights."""
        if load_best_model:
            self._load_best(model_file)
        return self.evaluate_bundles(self.evaluation_sessions(eval_data))

    def _save_checkpoint(self, epoch: int, verbose: bool = True, **kwargs: Any) -> None:
        """The best epoch so far: the trained tensors only, in safetensors."""
        if not self._is_writer():
            return
        from safetensors.torch import save

        metadata = {"epoch": str(epoch), "fingerprint": self.fingerprint, "score": str(self.best_valid_score)}
        atomic_write_bytes(self.work_dir / BEST, save(self.model.trained_state(), metadata=metadata))
        if verbose:
            self.logger.info("saved the best epoch so far (%d) to %s", epoch + 1, self.work_dir / BEST)

    def resume_checkpoint(self, resume_file: str | Path) -> None:
        """Continue from a checkpoint of :meth:`_train_epoch` (epoch, step, optimizer, RNG)."""
        progress = load_checkpoint(resume_file, self.model, self.optimizer)
        if progress.fingerprint != self.fingerprint:
            raise SettingsError(f"{resume_file} belongs to another training (fingerprint {progress.fingerprint[:12]}); "
                                "delete it to train from the start")
        self.start_epoch = self.resume_epoch = progress.epoch
        self.resume_step, self.global_step, self.cur_step = progress.step_in_epoch, progress.global_step, progress.cur_step
        if progress.best_valid_score is not None:
            self.best_valid_score = progress.best_valid_score
        self.epoch_stats = list(progress.extra.get("epoch_stats", []))
        self.logger.info("resuming training from epoch %d, batch %d (%s)", progress.epoch + 1,
                         progress.step_in_epoch, resume_file)

    # ------------------------------------------------------------------ internals

    def _plan(self) -> None:
        if not self.examples:
            raise SettingsError("no training session has ground-truth bundles: nothing to fine-tune on")
        _, world = rank_and_world()
        batches = math.ceil(len(self.examples) / self.config["train_batch_size"]) // world or 1
        self.total_steps = max(1, self.epochs * math.ceil(batches / self.config["gradient_accumulation_steps"]))

    def _learning_rate(self) -> float:
        warmup = int(self.config["warmup_ratio"] * self.total_steps)
        step = self.global_step
        if step < warmup:
            return self.learning_rate * (step + 1) / (warmup + 1)
        schedule = self.config["lr_schedule"]
        if schedule == "constant":
            return self.learning_rate
        done = (step - warmup) / max(1, self.total_steps - warmup)
        if schedule == "cosine":
            return self.learning_rate * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
        return self.learning_rate * max(0.0, 1 - done)

    def _step(self, world: int) -> None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if world > 1:
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                torch.distributed.all_reduce(p.grad)
                p.grad.div_(world)
        if self.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, **self.clip_grad_norm)
        for group in self.optimizer.param_groups:
            group["lr"] = self._learning_rate()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1

    def _sync_from_rank0(self) -> None:
        """Start every process from rank 0's trained tensors, as DistributedDataParallel does: one
        seed gives one LoRA init only where every device computes alike, and rank 0 may already
        have rewritten the checkpoint that the others resumed from."""
        if rank_and_world()[1] > 1:
            for p in self.model.parameters():
                if p.requires_grad:
                    torch.distributed.broadcast(p.data, src=0)

    def _save_last(self, epoch: int, step_in_epoch: int) -> None:
        if not self._is_writer():  # rank 0 alone owns the resumable state
            return
        best = None if not math.isfinite(self.best_valid_score) else float(self.best_valid_score)
        progress = TrainingProgress(self.fingerprint, epoch, step_in_epoch, self.global_step, best, self.cur_step,
                                    extra={"epoch_stats": self.epoch_stats})
        save_checkpoint(self.work_dir / LAST, self.model, self.optimizer, progress)

    def _load_best(self, model_file: str | None = None) -> None:
        if rank_and_world()[1] > 1:
            torch.distributed.barrier()  # rank 0 may still be writing the best epoch's file
        path = Path(model_file) if model_file else (self.work_dir / BEST if self.fingerprint else None)
        if path is not None and path.is_file():
            self.model.load_state(read_tensors(path, "delete it to train again"))

    def _save_adapter(self) -> None:
        if not self._is_writer():
            return
        info = {"training": self._training_info(), **self.model.adapter_record()}
        finished = self.model.save_adapter(self.work_dir / ADAPTER, self.fingerprint, info)
        self._copy_adapter(finished)

    def _copy_adapter(self, folder: Path) -> None:
        if folder.resolve() == self.adapter_dir.resolve():
            return
        shutil.rmtree(self.adapter_dir, ignore_errors=True)
        shutil.copytree(folder, self.adapter_dir)

    def _reuse_adapter(self) -> bool:
        """Load a trained adapter instead of training: ``adapter_path`` if given, else one of the
        same fingerprint left by an earlier run of this output folder."""
        explicit = self.config["adapter_path"]
        candidates = [Path(explicit)] if explicit else []
        if not explicit and self.run_folders is not None:
            candidates += [self.run_folders.out / ADAPTER, self.work_dir / ADAPTER]
        for folder in candidates:
            info = adapter_info(folder) if folder.is_dir() else None
            if explicit and info is None:
                raise SettingsError(f"adapter_path {folder} is not an adapter folder written by a BundleSFT run")
            if info is None or (not explicit and info.get("fingerprint") != self.fingerprint):
                continue
            if not explicit:
                try:
                    verify_weights(folder, info)
                except DamagedAdapter as exc:  # found by fingerprint: train it again instead
                    self.logger.warning("%s; training it again", exc)
                    continue
            self.model.load_adapter(folder)
            if self._is_writer():
                self._copy_adapter(folder)
            self.model.run_info["training"] = {"reused_adapter": str(folder), **info.get("training", {})}
            self.logger.info("reusing the trained adapter %s (same base model, data, knowledge and settings)"
                             if not explicit else "evaluating the adapter %s (adapter_path)", folder)
            return True
        return False

    def _training_info(self) -> dict[str, Any]:
        seconds = sum(e["seconds"] for e in self.epoch_stats)
        return {"epochs_run": len(self.epoch_stats), "optimizer_steps": self.global_step,
                "train_seconds": round(seconds, 2), "valid_seconds": round(self.timing.get("valid_seconds", 0.0), 2),
                "best_valid_score": None if not math.isfinite(self.best_valid_score) else self.best_valid_score,
                "epochs": self.epoch_stats, "fingerprint": self.fingerprint,
                "trainable_at_end": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
                **{k: v for k, v in self.model.run_info.get("training_data", {}).items()}}

