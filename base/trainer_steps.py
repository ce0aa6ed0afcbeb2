"""What a trainer defines: the names it logs and what one step does with one batch."""

from abc import ABC, abstractmethod
from typing import Any

import torch


class TrainerSteps(ABC):
    """The part of a trainer that is its own; `BaseTrainer` provides the loop around it."""

    model_names: tuple[str, ...] = ("model",)  # the models the trainer expects, by name
    # The evaluation report test.py makes under `test.report: auto`: a report's name (a
    # module of logger/reports/); None chooses one from the model's output and the targets.
    report: str | None = None

    @abstractmethod
    def logged_names(self) -> list[str]:
        """The names of the epoch log: what `train_step` returns, and `val_` + what
        `validation_step` returns when there is validation. `trainer.monitor` must be one."""

    @abstractmethod
    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """Train on one batch (already on the device): forward under `self.updates.autocast()`,
        `self.updates.backward(loss)`, `self.updates.step(optimizer)` for each optimizer.
        Return the batch's values to log (0-d tensors, kept on the device)."""

    def stateful_metrics(self) -> dict[str, Any]:
        """The logged values that are computed from a state over all their batches (such as
        torchmetrics metrics), by name: `train_step` and `validation_step` give each its
        `MetricInputs`. None by default."""
        return {}

    def validation_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """Evaluate one batch (no gradients, eval mode); return the values to log."""
        raise NotImplementedError(f"{type(self).__name__} has no validation_step")

    @classmethod
    def evaluates(cls) -> bool:
        """Whether this trainer has a `validation_step` (validation, test.py)."""
        return cls.validation_step is not TrainerSteps.validation_step
