"""What a classifier predicted during an evaluation, recorded in the same pass as its metrics.

A forward hook on the model sees every output that the trainer's `validation_step` computes
(under the same autocast and memory format, with the weights being evaluated: an EMA hook's
averaged ones), and `watch` passes the batches through to the trainer, so that the hook
knows the targets of the output it sees. Only the confusion counts and the few worst
mistakes are kept, never all outputs.
"""

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from utils.batch import is_image_batch
from utils.classification_metrics import ClassificationReport, count_confusion
from utils.worst_predictions import Mistakes, WorstPredictions

logger = logging.getLogger(__name__)


class PredictionRecorder:
    """Confusion counts and the `n_worst` most confident mistakes of `model` on the batches
    that pass through `watch`. Anything that is not a classifier on `(input, target)` batches
    (output not (B, C) scores, targets not class indices in [0, C), the model not called
    exactly once per batch, no model at all) stops the recording, with `skipped` saying why."""

    def __init__(self, model: nn.Module | None, n_worst: int) -> None:
        self.model = model
        self.skipped: str | None = None if model is not None else "the trainer has no `model`"
        self.grid_skipped: str | None = None if n_worst else "none asked for (--worst 0)"
        self.worst = WorstPredictions(n_worst)
        self.confusion: torch.Tensor | None = None  # (C, C) int64 on the device
        self._outside = torch.zeros((), dtype=torch.long)  # targets outside [0, C), counted
        self._batch: Any = None  # the batch being evaluated
        self._calls = 0  # model calls on it

    def watch(self, batches: Iterable) -> Iterator:
        """Yield `batches` unchanged, recording the model's output on each."""
        if self.skipped:
            yield from batches
            return
        handle = self.model.register_forward_hook(self._record)
        try:
            for batch in batches:
                self._batch, self._calls = batch, 0
                yield batch  # the trainer evaluates it before asking for the next one
                if self._calls != 1 and not self.skipped:
                    self._skip(f"the model ran {self._calls} times on one batch, not once")
        finally:
            handle.remove()
            self._batch = None

    @torch.no_grad()
    def _record(self, module: nn.Module, args: Any, output: Any) -> None:
        self._calls += 1
        if self.skipped or self._calls > 1:
            return
        reason = not_classification(self._batch, output, self.confusion)
        if reason:
            self._skip(reason)
            return
        inputs, target = self._batch
        target = target.to(output.device, torch.long, non_blocking=True)  # (B,)
        confidence, predicted = output.float().softmax(1).max(1)  # (B,) each
        if self.confusion is None:
            n_classes = output.shape[1]
            self.confusion = torch.zeros(n_classes, n_classes, dtype=torch.long,
                                         device=output.device)  # fmt: skip
            self._outside = self._outside.to(output.device)
        self._outside += count_confusion(self.confusion, target, predicted)
        if self.grid_skipped is None and not is_image_batch(inputs):
            self.grid_skipped = "the inputs are not image batches (B, C, H, W)"
        if self.grid_skipped is None:
            self.worst.update(inputs, target, predicted, confidence)

    def _skip(self, reason: str) -> None:
        self.skipped = reason
        self.confusion = None
        self.worst = WorstPredictions(0)

    def report(self, class_names: Iterable[Any] | None) -> ClassificationReport | None:
        """The report of what was recorded, class names from `class_names` (e.g. a dataset's
        `classes`) when there is one per class, else the indices; None, logged, when skipped."""
        if not self.skipped and self.confusion is None:
            self._skip("there were no samples")
        outside = self._outside.item()
        if not self.skipped and outside:
            self._skip(f"{outside} targets are not class indices in [0, {len(self.confusion)})")
        if self.skipped:
            logger.info("no classification report: %s", self.skipped)
            return None
        confusion = self.confusion.cpu()
        names = [str(name) for name in class_names] if class_names is not None else []
        if len(names) != len(confusion):
            names = [str(index) for index in range(len(confusion))]
        return ClassificationReport(confusion, names)

    def mistakes(self) -> Mistakes | None:
        """The most confident mistakes; None, logged, when no grid is drawn."""
        if self.skipped:
            return None
        if self.grid_skipped:
            logger.info("no grid of misclassified examples: %s", self.grid_skipped)
            return None
        return self.worst.result()


def not_classification(batch: Any, output: Any, confusion: torch.Tensor | None) -> str | None:
    """Why `output` on `batch` is not a classifier's (B, C) scores for (input, target) with
    B class indices, in the shape earlier batches had; None when it is one."""
    if not (isinstance(batch, tuple | list) and len(batch) == 2):
        return "the batches are not (input, target) pairs"
    if not (isinstance(output, torch.Tensor) and output.dim() == 2):
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        return f"the model's output is not (batch, classes) scores: {shape}"
    target = batch[1]
    if not isinstance(target, torch.Tensor):
        return f"the targets are not class indices: {type(target).__name__}"
    integer = not (target.is_floating_point() or target.is_complex() or target.dtype == torch.bool)
    if not integer or target.shape != output.shape[:1]:
        return f"the targets are not class indices, one per sample: {target.dtype} " \
            f"{tuple(target.shape)} for output {tuple(output.shape)}"  # fmt: skip
    if confusion is not None and output.shape[1] != len(confusion):
        return f"the number of classes changed from {len(confusion)} to {output.shape[1]}"
    return None
