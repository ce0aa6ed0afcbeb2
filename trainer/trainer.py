"""The supervised trainer: `(input, target)` batches, a loss, and metrics."""

from collections.abc import Callable
from typing import Any

import torch

from base import BaseTrainer
from base.metric_tracker import MetricInputs, is_stateful
from utils.batch import call_model


class Trainer(BaseTrainer):
    """Trains `model` on `(input, target)` batches with `criterion`, logging `metric_fns`.

    `input` is a tensor of any shape, or a tuple/list (passed as `model(*input)`) or dict
    (`model(**input)`) of tensors. Logs `loss` and each metric, with `val_` for validation.
    """

    def __init__(
        self, *args: Any, criterion: Callable, metric_fns: dict[str, Callable], **kwargs: Any
    ) -> None:
        self.criterion = criterion
        self.metric_fns = metric_fns
        super().__init__(*args, **kwargs)
        self.model = self.models["model"]  # wrapped for DDP or compile, when asked
        self.bare_model = self.bare_models["model"]
        self.optimizer = self.optimizers["model"]

    def logged_names(self) -> list[str]:
        names = ["loss", *self.metric_fns]
        return names + ["val_" + name for name in names] if self.valid_data_loader else names

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        input, target = batch
        with self.updates.autocast():
            output = call_model(self.model, input)  # e.g. (B, num_classes)
            loss = self.criterion(output, target)
        self.updates.backward(loss)
        self.updates.step(self.optimizer)
        return self.measure(loss, output, target)

    def validation_step(self, batch: Any) -> dict[str, torch.Tensor]:
        input, target = batch
        with self.updates.autocast():
            output = call_model(self.model, input)
            loss = self.criterion(output, target)
        return self.measure(loss, output, target)

    def stateful_metrics(self) -> dict[str, Any]:
        return {name: f for name, f in self.metric_fns.items() if is_stateful(f)}

    @torch.no_grad()
    def measure(self, loss: torch.Tensor, output: Any, target: Any) -> dict[str, Any]:
        """The loss and every metric function's value on one batch, as 0-d tensors on the
        device; for a torchmetrics metric, what it is updated with (`MetricInputs`)."""
        values: dict[str, Any] = {"loss": loss}
        for name, metric in self.metric_fns.items():
            if is_stateful(metric):
                values[name] = MetricInputs(output.detach(), target)
            else:
                values[name] = metric(output, target)
        return values
