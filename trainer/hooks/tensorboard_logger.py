"""TensorBoard: training and epoch scalars, learning rates, gradient norms, epoch throughput,
the config, input images, parameter histograms."""

import json
import math
import time

from base import BaseTrainer, Hook
from base.sharding import is_sharded
from logger.tensorboard import TensorboardWriter, hyperparameters
from utils.batch import is_image_batch
from utils.distributed.process_group import world_size


def per_optimizer(trainer: BaseTrainer, tag: str, values: dict[str, float]) -> dict[str, float]:
    """`values` by optimizer name, tagged `tag` when the trainer's one optimizer is `model`'s,
    else `tag_<name>`."""
    single = list(trainer.optimizers) == ["model"]
    return {(tag if single else f"{tag}_{name}"): value for name, value in values.items()}


def learning_rates(trainer: BaseTrainer) -> dict[str, float]:
    """`lr` (one optimizer) or `lr_<name>` per optimizer: each one's first parameter group;
    its other groups (`optimizer.param_groups`) add `<that tag>_group<i>`."""
    rates = {}
    for name, optimizer in trainer.optimizers.items():
        (tag,) = per_optimizer(trainer, "lr", {name: 0.0})
        for index, group in enumerate(optimizer.param_groups):
            rates[f"{tag}_group{index}" if index else tag] = group["lr"]
    return rates


def gradient_norms(trainer: BaseTrainer) -> dict[str, float]:
    """`grad_norm` or `grad_norm_<name>`: each optimizer's gradient norm before clipping, at
    log steps (an optimizer that did not step has none)."""
    norms = trainer.updates.grad_norms
    measured = {name: o for name, o in trainer.optimizers.items() if o in norms}
    return per_optimizer(trainer, "grad_norm", {n: norms[o].item() for n, o in measured.items()})


class TensorBoardLogger(Hook):
    """Writes into the run's log directory, against the optimizer step: the resolved config
    as text when training starts, `train/*` at log steps, `epoch/*` after each epoch (with the
    training part's time and samples per second), a grid of the input of each epoch's first
    step (its group's last batch) when it is image-shaped (and `log_images`), and parameter
    histograms."""

    def __init__(self, log_images: bool = True) -> None:
        self.log_images = log_images
        self.writer: TensorboardWriter | None = None
        self._first_step = False
        self._epoch_start = 0.0  # time.perf_counter() at the epoch's start
        self._last_step_end = 0.0  # time.perf_counter() after its latest step
        self._epoch_samples = 0  # trained on in this process this epoch, over all ranks

    def before_train(self, trainer: BaseTrainer) -> None:
        # Hides what an interrupted attempt wrote after this point (all of it when a run
        # that had no checkpoint yet starts again). Only the rank with run directories writes.
        dirs = trainer.run_dirs
        self.writer = TensorboardWriter(dirs and dirs.log, dirs is not None, trainer.step + 1)
        config = json.dumps(trainer.config, indent=2)
        self.writer.text("config", f"```json\n{config}\n```", trainer.step)

    def before_epoch(self, trainer: BaseTrainer) -> None:
        self._first_step = trainer.batches.batches_done == 0
        self._epoch_samples = 0
        self._epoch_start = self._last_step_end = time.perf_counter()

    def after_step(self, trainer: BaseTrainer) -> None:
        self._epoch_samples += trainer.step_samples * world_size()
        if self._first_step and self.log_images:
            inputs = trainer.batch[0] if isinstance(trainer.batch, tuple | list) else trainer.batch
            if is_image_batch(inputs):
                self.writer.images("train/input", inputs[:64], trainer.step)
        self._first_step = False
        if trainer.window is not None:
            values = {**trainer.window, **learning_rates(trainer), **gradient_norms(trainer)}
            self.writer.scalars(values, trainer.step, prefix="train/")
        self._last_step_end = time.perf_counter()

    def after_epoch(self, trainer: BaseTrainer) -> None:
        values = {**trainer.epoch_log, **learning_rates(trainer)}
        if self._epoch_samples:  # (none when resumed from the epoch's last step)
            seconds = self._last_step_end - self._epoch_start  # training only, not validation
            values.update(train_seconds=seconds, samples_per_second=self._epoch_samples / seconds)
        self.writer.scalars(values, trainer.step, prefix="epoch/")
        for name, model in trainer.bare_models.items():
            if is_sharded(model):  # rank 0 holds a shard of each; the whole needs all ranks
                continue
            prefix = "parameters/" if name == "model" else f"parameters/{name}/"
            self.writer.histograms(model, trainer.step, prefix=prefix)

    def after_train(self, trainer: BaseTrainer) -> None:
        """At the end of a run that trained an epoch here, its row in the HParams tab: the
        config against the final `epoch/*` values and the best monitored value (logged as
        `hparams/best_<name>`). Not after a stop signal or an error: that run goes on when
        resumed, and TensorBoard keeps only a run's first hparams record."""
        if self.writer is None:
            return
        if trainer.epoch_log and trainer.failure is None:
            metric_tags = [f"epoch/{name}" for name in trainer.epoch_log]
            monitor = trainer.monitor
            if monitor.enabled and math.isfinite(monitor.best):
                best = {f"best_{monitor.name}": monitor.best}
                self.writer.scalars(best, trainer.step, prefix="hparams/")
                metric_tags.append(f"hparams/best_{monitor.name}")
            self.writer.hparams(hyperparameters(trainer.config), metric_tags, trainer.step)
        self.writer.close()
