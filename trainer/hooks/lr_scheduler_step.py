"""Step the LR schedulers, each once per epoch or once per optimizer step."""

from torch.optim.lr_scheduler import ReduceLROnPlateau

from base import BaseTrainer, Hook
from utils.config.check import node_path
from utils.errors import UserError


class LRSchedulerStep(Hook):
    """Steps `trainer.lr_schedulers[name]` after every optimizer step when `intervals[name]`
    is "step", else after every epoch. `ReduceLROnPlateau` watches the monitored value
    (else `val_loss`, else `loss`)."""

    def __init__(self, intervals: dict[str, str]) -> None:
        self.intervals = intervals

    def check(self, trainer: BaseTrainer) -> None:
        """A `ReduceLROnPlateau` without a value to watch would fail after the first epoch."""
        logged = trainer.logged_names()
        if trainer.monitor.enabled or {"val_loss", "loss"} & set(logged):
            return
        for name, scheduler in trainer.lr_schedulers.items():
            if isinstance(scheduler, ReduceLROnPlateau):
                raise UserError(f"{node_path(trainer.config, 'lr_scheduler', name)}: "
                                "ReduceLROnPlateau watches trainer.monitor, else val_loss, else "
                                f"loss, and this run logs neither ({', '.join(logged)}); set "
                                "trainer.monitor to one of those")  # fmt: skip

    def after_step(self, trainer: BaseTrainer) -> None:
        for name, scheduler in trainer.lr_schedulers.items():
            if self.intervals[name] == "step":
                scheduler.step()

    def after_epoch(self, trainer: BaseTrainer) -> None:
        log = trainer.epoch_log
        for name, scheduler in trainer.lr_schedulers.items():
            if self.intervals[name] == "epoch" and isinstance(scheduler, ReduceLROnPlateau):
                watched = trainer.monitor.name or ("val_loss" if "val_loss" in log else "loss")
                scheduler.step(log[watched])
            elif self.intervals[name] == "epoch":
                scheduler.step()
