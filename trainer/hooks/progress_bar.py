"""Progress within an epoch: a tqdm bar on a terminal, a plain line now and then elsewhere."""

import logging
import sys
import time

from tqdm import tqdm

from base import BaseTrainer, Hook
from utils.distributed.process_group import is_main_process

logger = logging.getLogger(__name__)


class ProgressBar(Hook):
    """On a terminal: one bar per epoch (on rank 0), moved after each optimizer step, with
    the loss of the last logging window beside it and `valid` while validating.

    Off a terminal (a batch job's log file), a bar would be one long line of carriage
    returns per epoch; instead a plain line (`batch 120/469 of epoch 3/15  loss 0.2345
    51.2 batches/s`) is logged at most every `interval` seconds.
    """

    def __init__(self, interactive: bool | None = None, interval: float = 30.0) -> None:
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.interval = interval
        self.bar: tqdm | None = None
        self._last_line = 0.0
        self._batches_at_last_line = 0
        self._loss: float | None = None  # of the last logging window

    def before_epoch(self, trainer: BaseTrainer) -> None:
        if not self.interactive:
            self._last_line = time.perf_counter()
            self._batches_at_last_line = trainer.batches.batches_done
            return
        self.bar = tqdm(
            total=trainer.batches.batches_per_epoch,
            initial=trainer.batches.batches_done,
            desc=f"epoch {trainer.epoch + 1}/{trainer.epochs}",
            disable=not is_main_process(),
            leave=False,
            dynamic_ncols=True,
        )

    def after_step(self, trainer: BaseTrainer) -> None:
        if trainer.window is not None and "loss" in trainer.window:
            self._loss = trainer.window["loss"]
        if self.bar is not None:
            self.bar.update(trainer.batches.batches_done - self.bar.n)
            if self._loss is not None:
                self.bar.set_postfix(loss=f"{self._loss:.4f}")
        elif not self.interactive and is_main_process():
            self._log_line(trainer)

    def _log_line(self, trainer: BaseTrainer) -> None:
        now = time.perf_counter()
        if now - self._last_line < self.interval:
            return
        done, total = trainer.batches.batches_done, trainer.batches.batches_per_epoch
        rate = (done - self._batches_at_last_line) / max(now - self._last_line, 1e-9)
        where = f"batch {done}/{total} of epoch {trainer.epoch + 1}/{trainer.epochs}"
        loss = f"  loss {self._loss:.4f}" if self._loss is not None else ""
        logger.info("%s%s  %.1f batches/s", where, loss, rate)
        self._last_line, self._batches_at_last_line = now, done

    def before_validation(self, trainer: BaseTrainer) -> None:
        if self.bar is not None:
            self.bar.set_description(f"epoch {trainer.epoch + 1}/{trainer.epochs} valid")

    def after_epoch(self, trainer: BaseTrainer) -> None:
        self.after_train(trainer)

    def after_train(self, trainer: BaseTrainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
