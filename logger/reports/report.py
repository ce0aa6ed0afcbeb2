"""What every kind of evaluation report does: read each batch's model output in the pass that
computes the test metrics, then give numbers, a table and pictures.

A report keeps its state on the device (torchmetrics metrics, a few kept samples) and never
waits for it while batches go by; `finish` moves what it needs to the host once.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from PIL import Image


class NotReportable(Exception):
    """What was recorded cannot make this report (said in one log line; the metrics are
    written as always)."""


@dataclass
class ReportResult:
    """A finished report: `summary` goes into test_metrics.json under `report`, `rows` (a
    header, then one row per line) into the log and TensorBoard's Text tab, each picture
    into `<checkpoint stem>.<name>.png` and TensorBoard as `test/<name>`."""

    summary: dict[str, Any]
    rows: list[list[str]]
    pictures: dict[str, Image.Image] = field(default_factory=dict)


class Report(ABC):
    """One kind of report, chosen by `name` (`test.report`, a trainer's `report`), or tried in
    turn when `test.report` is `auto`. A subclass in any module of `logger/reports/` is a
    kind a config or a trainer may name."""

    name: ClassVar[str]  # the value of test.report that chooses it
    pictures: ClassVar[tuple[str, ...]] = ()  # the names of the pictures it may draw

    def __init__(self, data_loader: Any, n_worst: int) -> None:
        """`data_loader` is the one evaluated (its `classes`, say); `n_worst`: how many of
        the worst samples a report that draws them draws (`--worst`)."""
        self.data_loader = data_loader
        self.n_worst = n_worst

    @abstractmethod
    def misfit(self, inputs: Any, output: Any, target: Any) -> str | None:
        """Why this report cannot read one batch, from shapes and types only (it is asked for
        every batch, and must not wait for the device); None when it can."""

    @abstractmethod
    def update(self, inputs: Any, output: Any, target: Any) -> None:
        """Add one batch that `misfit` accepted."""

    @abstractmethod
    def finish(self, title: str) -> ReportResult:
        """The report over every batch added; `title` names the checkpoint for the pictures.
        Raises `NotReportable` when what was added cannot make it."""


def describe(value: Any) -> str:
    """A value's shape, if it is a tensor, else its type, for the reasons a report gives."""
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__
