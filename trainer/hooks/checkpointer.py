"""Resumable checkpoints: every `save_period` epochs, every `save_every_steps` steps, the best."""

import logging
from pathlib import Path

from base import BaseTrainer, Hook

logger = logging.getLogger(__name__)


def keep_newest(directory: Path, prefix: str, keep: int) -> None:
    """Delete all but the `keep` highest-numbered `<prefix><N>.pth` in `directory`."""
    numbered = sorted(
        directory.glob(f"{prefix}*.pth"), key=lambda p: int(p.stem.removeprefix(prefix))
    )
    for old in numbered[:-keep]:
        old.unlink()


class Checkpointer(Hook):
    """Writes `checkpoint-epoch<N>.pth` every `save_period` epochs, at the last epoch and when
    the run is stopped (keeping the newest `keep_last`, or all); `checkpoint-step<N>.pth` every
    `save_every_steps` optimizer steps and on a stop request mid-epoch (keeping the newest two);
    and `model_best.pth` whenever the monitored value improves. Put it after the hooks that
    change state or request a stop, so that what it saves includes their work."""

    def __init__(
        self,
        save_period: int = 1,
        keep_last: int | None = None,
        save_every_steps: int | None = None,
    ) -> None:
        self.save_period = save_period
        self.keep_last = keep_last
        self.save_every_steps = save_every_steps

    def after_step(self, trainer: BaseTrainer) -> None:
        every = self.save_every_steps and trainer.step % self.save_every_steps == 0
        if every or trainer.stop_requested:
            trainer.save(f"checkpoint-step{trainer.step}.pth")  # every rank calls save
            self._prune(trainer, "checkpoint-step", 2)

    def after_epoch(self, trainer: BaseTrainer) -> None:
        epoch = trainer.epoch
        if epoch % self.save_period == 0 or epoch == trainer.epochs or trainer.stop_requested:
            trainer.save(f"checkpoint-epoch{epoch}.pth")
            self._prune(trainer, "checkpoint-epoch", self.keep_last)
        if trainer.monitor.improved:
            trainer.save("model_best.pth")
            logger.info("new best %s %.6g", trainer.monitor.name, trainer.monitor.best)

    def _prune(self, trainer: BaseTrainer, prefix: str, keep: int | None) -> None:
        if trainer.run_dirs is not None and keep is not None:
            keep_newest(trainer.run_dirs.models, prefix, keep)
