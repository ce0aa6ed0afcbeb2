"""A tqdm progress bar over each epoch's batches."""

from tqdm import tqdm

from base import BaseTrainer, Hook
from utils.distributed import is_main_process


class ProgressBar(Hook):
    """One bar per epoch (on rank 0), moved after each optimizer step; the loss of the last
    logging window beside it, and `valid` while validating."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def before_epoch(self, trainer: BaseTrainer) -> None:
        self.bar = tqdm(
            total=trainer.batches.batches_per_epoch,
            initial=trainer.batches.batches_done,
            desc=f"epoch {trainer.epoch + 1}/{trainer.epochs}",
            disable=not is_main_process(),
            leave=False,
            dynamic_ncols=True,
        )

    def after_step(self, trainer: BaseTrainer) -> None:
        self.bar.update(trainer.batches.batches_done - self.bar.n)
        if trainer.window is not None and "loss" in trainer.window:
            self.bar.set_postfix(loss=f"{trainer.window['loss']:.4f}")

    def before_validation(self, trainer: BaseTrainer) -> None:
        if self.bar is not None:
            self.bar.set_description(f"epoch {trainer.epoch + 1}/{trainer.epochs} valid")

    def after_epoch(self, trainer: BaseTrainer) -> None:
        self.after_train(trainer)

    def after_train(self, trainer: BaseTrainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
