"""The epoch loop every trainer shares: monitoring, early stopping, checkpoints, resume."""

import logging
import math
import signal
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn

from logger.tensorboard import TensorboardWriter
from utils.checkpoint import load_weights, save_checkpoint
from utils.config import parse_monitor
from utils.distributed import all_reduce_sum, is_distributed
from utils.errors import UserError, did_you_mean
from utils.run_dir import RunDirs
from utils.seed import get_rng_state, set_rng_state
from utils.stop_signals import Stopped, StopSignals

logger = logging.getLogger(__name__)


class BaseTrainer(ABC):
    """Runs epochs and decides what to keep; a subclass says what one epoch is.

    Per epoch: `_train_epoch` returns the logged values (`loss`, metrics, `val_*`); the
    monitored one decides `model_best.pth` and early stopping; every `save_period` epochs
    (and at the end) a resumable checkpoint is written, keeping the newest `keep_last`.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: Any,
        config: dict,
    ) -> None:
        self.bare_model = model  # what checkpoints hold: never wrapped, never compiled
        self.model = model  # what training calls; a subclass may wrap or compile it
        self.scaler: torch.amp.GradScaler | None = None  # a subclass's fp16 loss scaler
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.config = config
        options = config["trainer"]
        self.epochs = options["epochs"]
        self.save_period = options["save_period"]
        self.keep_last = options["keep_last"]
        self.early_stop = options["early_stop"]
        self.save_every_steps = options["save_every_steps"]
        self.tensorboard = options["tensorboard"]
        self.monitor_mode, self.monitor_metric = parse_monitor(options["monitor"])
        if self.monitor_mode != "off" and self.monitor_metric not in self.logged_names():
            raise UserError(
                f"trainer.monitor: {self.monitor_metric!r} is not logged by this run"
                f"{did_you_mean(self.monitor_metric, self.logged_names())}"
            )
        self.monitor_best = math.inf if self.monitor_mode == "min" else -math.inf
        self.not_improved_count = 0
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.batches_done = 0  # batches of the current epoch trained on (0 between epochs)
        self.stop_signals = StopSignals()
        self.writer: TensorboardWriter | None = None
        self.run_dirs: RunDirs | None = None
        self._rng_state: dict | None = None

    @abstractmethod
    def logged_names(self) -> list[str]:
        """The names `_train_epoch` returns values for, e.g. `loss`, `accuracy`, `val_loss`."""

    @abstractmethod
    def _train_epoch(self, epoch: int) -> dict[str, float]:
        """Train (and validate) for one epoch; return each logged name's epoch mean."""

    def train(self, run_dirs: RunDirs | None) -> None:
        """Run the remaining epochs, writing checkpoints and logs into `run_dirs`.

        Under torchrun only rank 0 writes; the other ranks pass None.
        """
        self.run_dirs = run_dirs
        resumed = self.step > 0
        self.writer = TensorboardWriter(
            run_dirs.log if run_dirs else None,
            self.tensorboard and run_dirs is not None,
            purge_step=self.step + 1 if resumed else None,
        )
        if self._rng_state is not None:
            set_rng_state(self._rng_state)  # last, so building the run drew nothing from it
        with self.stop_signals:
            try:
                self._run_epochs()
            finally:
                self.writer.close()

    def _run_epochs(self) -> None:
        """The epoch loop: train, log, track the monitored value, save, maybe stop."""
        run_dirs = self.run_dirs
        for epoch in range(self.epoch + 1, self.epochs + 1):
            log = self._train_epoch(epoch)
            self.epoch = epoch
            logger.info(
                "epoch %d/%d  step %d  %s",
                epoch,
                self.epochs,
                self.step,
                "  ".join(f"{name} {value:.6g}" for name, value in log.items()),
            )
            improved = self._update_monitor(log)
            stop = self.early_stop > 0 and self.not_improved_count >= self.early_stop
            signalled = self._stop_requested()
            periodic = epoch % self.save_period == 0 or epoch == self.epochs or stop or signalled
            if run_dirs is not None and (periodic or improved):  # the writing rank
                state = self.state_dict()
                if periodic:
                    self._save_periodic(state)
                if improved:
                    save_checkpoint(state, run_dirs.models / "model_best.pth")
                    logger.info(
                        "saved model_best.pth (%s %.6g)", self.monitor_metric, self.monitor_best
                    )
            if signalled:
                raise Stopped(self.stop_signals.received)
            if stop:
                logger.info(
                    "%s has not improved for %d epochs: stopping early.",
                    self.monitor_metric,
                    self.not_improved_count,
                )
                break

    def _after_step(self, check_stop: bool) -> None:
        """Called by a subclass after each optimizer step: the step checkpoint every
        `save_every_steps`, and on a stop signal a resumable checkpoint, then `Stopped`."""
        signalled = check_stop and self._stop_requested()
        if self.run_dirs is not None and (
            signalled or (self.save_every_steps and self.step % self.save_every_steps == 0)
        ):
            self._save_step()
        if signalled:
            raise Stopped(self.stop_signals.received)

    def _stop_requested(self) -> bool:
        """Whether to stop now; under torchrun all ranks agree (any rank signalled: all stop)."""
        signalled = self.stop_signals.received is not None
        if not is_distributed():
            return signalled
        device = next(self.bare_model.parameters()).device
        anyone = bool(all_reduce_sum(torch.tensor([float(signalled)], device=device)).item())
        if anyone and self.stop_signals.received is None:
            self.stop_signals.received = signal.SIGTERM  # another rank was signalled
        return anyone

    def _save_step(self) -> Path:
        """`checkpoint-step<N>.pth`, resumable from the middle of an epoch; keeps the newest two."""
        path = self.run_dirs.models / f"checkpoint-step{self.step}.pth"
        save_checkpoint(self.state_dict(), path)
        logger.info("saved %s", path)
        self._keep_newest("checkpoint-step", 2)
        return path

    def _keep_newest(self, prefix: str, keep: int) -> None:
        """Delete all but the `keep` highest-numbered `<prefix><N>.pth` of the run."""
        numbered = sorted(
            self.run_dirs.models.glob(f"{prefix}*.pth"),
            key=lambda p: int(p.stem.removeprefix(prefix)),
        )
        for old in numbered[:-keep]:
            old.unlink()

    def _update_monitor(self, log: dict[str, float]) -> bool:
        """Track the best monitored value; True when this epoch improved on it."""
        if self.monitor_mode == "off":
            return False
        value = log[self.monitor_metric]
        improved = (
            value < self.monitor_best if self.monitor_mode == "min" else value > self.monitor_best
        )
        if improved:
            self.monitor_best, self.not_improved_count = value, 0
        else:
            self.not_improved_count += 1
        return improved

    def _save_periodic(self, state: dict[str, Any]) -> None:
        path = self.run_dirs.models / f"checkpoint-epoch{self.epoch}.pth"
        save_checkpoint(state, path)
        logger.info("saved %s", path)
        if self.keep_last is not None:
            self._keep_newest("checkpoint-epoch", self.keep_last)

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint: tensors and plain Python data only (see DESIGN.md)."""
        return {
            "arch": type(self.bare_model).__name__,
            "epoch": self.epoch,
            "step": self.step,
            "state_dict": self.bare_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler else None,
            "scaler": self.scaler.state_dict()
            if self.scaler and self.scaler.is_enabled()
            else None,
            "monitor_best": self.monitor_best,
            "not_improved_count": self.not_improved_count,
            "config": self.config,
            "rng": get_rng_state(),
            "batches_done": self.batches_done,
            "progress": self.progress_state(),
        }

    @abstractmethod
    def progress_state(self) -> dict[str, Any]:
        """What a subclass needs to continue an epoch from `batches_done` (e.g. metric totals)."""

    @abstractmethod
    def load_progress_state(self, state: dict[str, Any]) -> None:
        """Restore what `progress_state` returned."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the run a checkpoint came from: weights, optimizer, schedule, counters, RNG."""
        self.load_weights(state)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None and state["lr_scheduler"] is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if self.scaler is not None and self.scaler.is_enabled() and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.batches_done = state["batches_done"]
        self.load_progress_state(state["progress"])
        if state["config"]["trainer"]["monitor"] == self.config["trainer"]["monitor"]:
            self.monitor_best = state["monitor_best"]
            self.not_improved_count = state["not_improved_count"]
        self._rng_state = state["rng"]

    def load_weights(self, state: dict[str, Any]) -> None:
        """Load only the model weights (fine-tuning from a checkpoint with a new config)."""
        load_weights(self.bare_model, state)
