"""What the model outputs during an evaluation, handed to a report in the same pass as the metrics.

A forward hook on the model sees every output that the trainer's `validation_step` computes
(under the same autocast and memory format, with the weights being evaluated: an EMA hook's
averaged ones), and `watch` passes the batches through to the trainer, so that the hook
knows the inputs and targets of the output it sees.
"""

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from logger.reports.report import NotReportable, Report, ReportResult
from utils.errors import UserError

logger = logging.getLogger(__name__)


class ReportRecorder:
    """Feeds `(inputs, output, target)` of each batch that passes through `watch` to a report:
    the first of `candidates` that fits the first batch. With `named` (the config key that
    named the one candidate) a misfit there is a `UserError`; otherwise, and for any later
    batch that does not fit, or a model that is not called exactly once per batch, the
    recording stops, with `skipped` saying why."""

    def __init__(self, model: nn.Module | None, candidates: list[Report],
                 named: str | None = None) -> None:  # fmt: skip
        self.model, self.candidates, self.named = model, candidates, named
        self.report: Report | None = None
        self.skipped: str | None = None
        if not candidates:
            self.skipped = "none asked for (test.report: none)"
        elif model is None:
            self.skipped = "the trainer has no `model`"
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
                    self.skipped = f"the model ran {self._calls} times on one batch, not once"
        finally:
            handle.remove()
            self._batch = None

    @torch.no_grad()
    def _record(self, module: nn.Module, args: Any, output: Any) -> None:
        self._calls += 1
        if self.skipped or self._calls > 1:
            return
        if not (isinstance(self._batch, tuple | list) and len(self._batch) == 2):
            self.skipped = "the batches are not (input, target) pairs"
            return
        inputs, target = self._batch
        if self.report is None:
            self.report = self._choose(inputs, output, target)  # None: `skipped` says why
        elif reason := self.report.misfit(inputs, output, target):
            self.skipped = reason
        if not self.skipped:
            self.report.update(inputs, output, target)

    def _choose(self, inputs: Any, output: Any, target: Any) -> Report | None:
        reasons = {}
        for candidate in self.candidates:
            reasons[candidate.name] = candidate.misfit(inputs, output, target)
            if reasons[candidate.name] is None:
                return candidate
        if self.named:
            (name, reason), = reasons.items()  # fmt: skip
            raise UserError(
                f"{self.named}: the {name} report does not fit this model: {reason}; name "
                "another report, or 'auto' or 'none'"
            )
        self.skipped = "no report fits (" + "; ".join(f"{k}: {v}" for k, v in reasons.items()) + ")"
        return None

    def finish(self, title: str) -> ReportResult | None:
        """The chosen report over every batch recorded; None, logged, when there is none."""
        if not self.skipped and self.report is None:
            self.skipped = "there were no samples"
        if not self.skipped:
            try:
                return self.report.finish(title)
            except NotReportable as reason:
                self.skipped = str(reason)
        kind = f"{self.report.name} " if self.report is not None else ""
        logger.info("no %sreport: %s", kind, self.skipped)
        return None
