"""The supervised trainer: the train step, the validation pass, and what gets logged."""

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DataLoader
from tqdm import tqdm

from base import BaseTrainer
from utils.metric_tracker import MetricTracker


def track_batch(
    trackers: list[MetricTracker],
    metric_fns: dict[str, Callable],
    loss: torch.Tensor,
    output: torch.Tensor,
    target: torch.Tensor,
) -> None:
    """Add one batch's loss and metrics to each tracker, without leaving the device."""
    values = {"loss": loss, **{name: metric(output, target) for name, metric in metric_fns.items()}}
    for tracker in trackers:
        for name, value in values.items():
            tracker.update(name, value, n=len(target))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data_loader: DataLoader,
    criterion: Callable,
    metric_fns: dict[str, Callable],
    device: torch.device,
    description: str,
    progress_bar: bool,
) -> dict[str, float]:
    """Sample-weighted mean loss and metrics of `model`, in eval mode, over all of `data_loader`."""
    model.eval()
    tracker = MetricTracker("loss", *metric_fns)
    bar = tqdm(data_loader, desc=description, disable=not progress_bar, leave=False,
               dynamic_ncols=True)  # fmt: skip
    for data, target in bar:
        data = data.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        output = model(data)
        track_batch([tracker], metric_fns, criterion(output, target), output, target)
    return tracker.result()


class Trainer(BaseTrainer):
    """Trains `model` on `(input, target)` batches with `criterion`, tracking `metric_fns`.

    Values are accumulated on the device; they reach the host (one synchronisation) only
    every `log_step` optimizer steps and at the end of an epoch.
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: Callable,
        metric_fns: dict[str, Callable],
        optimizer: torch.optim.Optimizer,
        config: dict,
        device: torch.device,
        data_loader: DataLoader,
        valid_data_loader: DataLoader | None = None,
        lr_scheduler: Any = None,
    ) -> None:
        self.metric_fns = metric_fns
        self.valid_data_loader = valid_data_loader
        super().__init__(model, optimizer, lr_scheduler, config)
        self.criterion = criterion
        self.device = device
        self.data_loader = data_loader
        options = config["trainer"]
        # Epoch-based: one pass over the loader. Iteration-based: `len_epoch` steps, the loader
        # carrying on where the previous epoch stopped.
        self.iteration_based = options["len_epoch"] is not None
        self.len_epoch = options["len_epoch"] or len(data_loader)  # optimizer steps per epoch
        self.log_step = options["log_step"]
        self.progress_bar = options["progress_bar"]
        names = ["loss", *metric_fns]
        self.train_metrics = MetricTracker(*names)  # the epoch's means
        self.window_metrics = MetricTracker(*names)  # the means since the last log step
        self._batches: Iterator | None = None

    def logged_names(self) -> list[str]:
        names = ["loss", *self.metric_fns]
        return names + ["val_" + name for name in names] if self.valid_data_loader else names

    def _epoch_batches(self) -> Iterator:
        """`len_epoch` batches; with iteration-based epochs the loader restarts when it runs out."""
        if not self.iteration_based:
            yield from self.data_loader
            return
        for _ in range(self.len_epoch):
            batch = next(self._batches, None) if self._batches is not None else None
            if batch is None:
                self._batches = iter(self.data_loader)
                batch = next(self._batches)
            yield batch

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        self.train_metrics.reset()
        self.window_metrics.reset()
        learning_rate = self.optimizer.param_groups[0]["lr"]
        bar = tqdm(
            self._epoch_batches(),
            total=self.len_epoch,
            desc=f"epoch {epoch}/{self.epochs}",
            disable=not self.progress_bar,
            leave=False,
            dynamic_ncols=True,
        )
        for batch_index, (data, target) in enumerate(bar):
            data = data.to(self.device, non_blocking=True)  # (B, C, H, W)
            target = target.to(self.device, non_blocking=True)  # (B,)
            self.optimizer.zero_grad(set_to_none=True)
            output = self.model(data)  # (B, num_classes)
            loss = self.criterion(output, target)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            with torch.no_grad():
                track_batch(
                    [self.train_metrics, self.window_metrics], self.metric_fns, loss, output, target
                )
            if batch_index == 0:
                self.writer.images("train/input", data[:64], self.step)
            if self.step % self.log_step == 0:
                window = self.window_metrics.result()
                self.window_metrics.reset()
                self.writer.scalars({**window, "lr": learning_rate}, self.step, prefix="train/")
                bar.set_postfix(loss=f"{window['loss']:.4f}")
        log = self.train_metrics.result()
        if self.valid_data_loader is not None:
            log.update({"val_" + name: value for name, value in self._valid_epoch(epoch).items()})
        self.writer.scalars({**log, "lr": learning_rate}, self.step, prefix="epoch/")
        self.writer.histograms(self.bare_model, self.step)
        self._step_lr_scheduler(log)
        return log

    def _valid_epoch(self, epoch: int) -> dict[str, float]:
        """Loss and metrics over the whole validation split."""
        description = f"epoch {epoch}/{self.epochs} valid"
        return evaluate(self.model, self.valid_data_loader, self.criterion, self.metric_fns,
                        self.device, description, self.progress_bar)  # fmt: skip

    def _step_lr_scheduler(self, log: dict[str, float]) -> None:
        """Once per epoch; ReduceLROnPlateau watches the monitored value (else the loss)."""
        if self.lr_scheduler is None:
            return
        if isinstance(self.lr_scheduler, ReduceLROnPlateau):
            watched = self.monitor_metric or ("val_loss" if "val_loss" in log else "loss")
            self.lr_scheduler.step(log[watched])
        else:
            self.lr_scheduler.step()
