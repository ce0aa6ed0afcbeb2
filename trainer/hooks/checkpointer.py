"""Resumable checkpoints: every `save_period` epochs, every `save_every_steps` steps, the best."""

import logging
import math
from pathlib import Path

from base import BaseTrainer, Hook
from utils.checkpoint.files import atomic_write, load_checkpoint, numbered_checkpoints
from utils.distributed.process_group import broadcast_from_main
from utils.errors import UserError

logger = logging.getLogger(__name__)


class Checkpointer(Hook):
    """Writes `checkpoint-epoch<N>.pth` every `save_period` epochs, at the last epoch and when
    the run is stopped (keeping the newest `keep_last`, or all); `checkpoint-step<N>.pth` every
    `save_every_steps` optimizer steps and on a stop request mid-epoch (keeping the newest two);
    and `model_best.pth` whenever the monitored value improves. Put it after the hooks that
    change state or request a stop, so that what it saves includes their work.

    `model_best.pth` is written before the epoch's checkpoint: a failure between the two then
    leaves a newest checkpoint that has not seen the new best, and its resumed run writes
    that best again. A resumed run whose `model_best.pth` is missing or does not hold the
    recorded best (set aside with a later future, or from before this order) restores it from
    the epoch checkpoint that set that best, if one is kept; else it forgets the recorded
    best, so that the next validated epoch writes `model_best.pth`."""

    def __init__(
        self,
        save_period: int = 1,
        keep_last: int | None = None,
        save_every_steps: int | None = None,
    ) -> None:
        self.save_period = save_period
        self.keep_last = keep_last
        self.save_every_steps = save_every_steps

    def before_train(self, trainer: BaseTrainer) -> None:
        if not trainer.monitor.enabled or math.isinf(trainer.monitor.best):
            return  # nothing recorded yet (or the monitor changed on resume)
        saved = None
        if trainer.run_dirs is not None:
            state = _saved_state(trainer.run_dirs.models / "model_best.pth")
            saved = None if state is None else state["monitor_best"]
            if saved != trainer.monitor.best and _restore_best(trainer):
                saved = trainer.monitor.best
        if broadcast_from_main(saved != trainer.monitor.best):  # the same choice on every rank
            logger.warning(
                "model_best.pth %s the recorded best %s %.6g: the next validated epoch "
                "writes it, even if it is not as good (no file holds that best any more)",
                "does not hold" if saved is not None else "is missing, with",
                trainer.monitor.name, trainer.monitor.best,
            )  # fmt: skip
            trainer.monitor.forget_best()

    def after_step(self, trainer: BaseTrainer) -> None:
        every = self.save_every_steps and trainer.step % self.save_every_steps == 0
        if every or trainer.stop_requested:
            trainer.save(f"checkpoint-step{trainer.step}.pth")  # every rank calls save
            self._prune(trainer, "step", 2)

    def after_epoch(self, trainer: BaseTrainer) -> None:
        epoch = trainer.epoch
        if trainer.monitor.improved:
            trainer.save("model_best.pth")
            logger.info("new best %s %.6g", trainer.monitor.name, trainer.monitor.best)
        if epoch % self.save_period == 0 or epoch == trainer.epochs or trainer.stop_requested:
            trainer.save(f"checkpoint-epoch{epoch}.pth")
            self._prune(trainer, "epoch", self.keep_last)

    def _prune(self, trainer: BaseTrainer, kind: str, keep: int | None) -> None:
        """Delete all but the `keep` highest-numbered `checkpoint-<kind><N>.pth`; files that
        only look alike (`checkpoint-step60-backup.pth`) are not the run's: kept."""
        if trainer.run_dirs is not None and keep is not None:
            for old in numbered_checkpoints(trainer.run_dirs.models, kind)[:-keep]:
                old.unlink()


def _restore_best(trainer: BaseTrainer) -> bool:
    """Copy to `model_best.pth` the kept epoch checkpoint that set the recorded best (saved at
    the same moment as the best model was, so it is the same file); False if none is kept."""
    models = trainer.run_dirs.models
    epochs = reversed(numbered_checkpoints(models, "epoch"))
    source = next((path for path in epochs if _set_best(path, trainer)), None)
    if source is None:
        return False
    contents = source.read_bytes()
    try:
        atomic_write(models / "model_best.pth", lambda file: file.write(contents))
    except OSError:
        return False  # (a full disk): the best is forgotten instead, and written when it can be
    logger.info("model_best.pth restored from %s, which set the recorded best %s %.6g",
                source.name, trainer.monitor.name, trainer.monitor.best)  # fmt: skip
    return True


def _set_best(path: Path, trainer: BaseTrainer) -> bool:
    """Whether the checkpoint at `path` was saved by the epoch that set the recorded best."""
    state = _saved_state(path)
    return (state is not None and state["step"] <= trainer.step
            and state["not_improved_count"] == 0
            and state["monitor_best"] == trainer.monitor.best)  # fmt: skip


def _saved_state(path: Path) -> dict | None:
    """The checkpoint at `path`; None if there is none to read."""
    try:
        return load_checkpoint(path) if path.is_file() else None
    except UserError:
        return None
