"""TensorBoard: training and epoch scalars, learning rates, input images, parameter histograms."""

from base import BaseTrainer, Hook
from logger.tensorboard import TensorboardWriter
from utils.batch import is_image_batch


def learning_rates(trainer: BaseTrainer) -> dict[str, float]:
    """`lr` (one optimizer) or `lr_<name>` per optimizer: each one's first parameter group."""
    rates = {name: o.param_groups[0]["lr"] for name, o in trainer.optimizers.items()}
    return (
        {"lr": rates["model"]}
        if list(rates) == ["model"]
        else {f"lr_{n}": r for n, r in rates.items()}
    )


class TensorBoardLogger(Hook):
    """Writes into the run's log directory, against the optimizer step: `train/*` every
    `log_step` steps, `epoch/*` after each epoch, a grid of the first training batch's input
    each epoch when it is image-shaped (and `log_images`), and parameter histograms."""

    def __init__(self, log_images: bool = True) -> None:
        self.log_images = log_images
        self.writer: TensorboardWriter | None = None
        self._first_step = False

    def before_train(self, trainer: BaseTrainer) -> None:
        resumed = trainer.step > 0  # hide what an interrupted attempt wrote after this point
        self.writer = TensorboardWriter(
            trainer.run_dirs.log if trainer.run_dirs else None,
            trainer.run_dirs is not None,
            purge_step=trainer.step + 1 if resumed else None,
        )

    def before_epoch(self, trainer: BaseTrainer) -> None:
        self._first_step = trainer.batches.batches_done == 0

    def after_step(self, trainer: BaseTrainer) -> None:
        if self._first_step and self.log_images:
            inputs = trainer.batch[0] if isinstance(trainer.batch, tuple | list) else trainer.batch
            if is_image_batch(inputs):
                self.writer.images("train/input", inputs[:64], trainer.step)
        self._first_step = False
        if trainer.window is not None:
            values = {**trainer.window, **learning_rates(trainer)}
            self.writer.scalars(values, trainer.step, prefix="train/")

    def after_epoch(self, trainer: BaseTrainer) -> None:
        values = {**trainer.epoch_log, **learning_rates(trainer)}
        self.writer.scalars(values, trainer.step, prefix="epoch/")
        for name, model in trainer.bare_models.items():
            prefix = "parameters/" if name == "model" else f"parameters/{name}/"
            self.writer.histograms(model, trainer.step, prefix=prefix)

    def after_train(self, trainer: BaseTrainer) -> None:
        if self.writer is not None:
            self.writer.close()
