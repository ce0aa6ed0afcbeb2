"""What every kind of evaluation report does: read each batch's model output in the pass that
computes the test metrics, then give numbers, a table and pictures. `WorstSamples` keeps the
worst samples of an evaluation (a classifier's surest mistakes, the worst reconstructions).

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


class WorstSamples:
    """The `n` samples with the highest scores, with the tensors that go with each.

    Never holds more than `n` samples: each batch's are merged into the kept ones at once, on
    the device, without waiting for it. Of equal scores the sample seen first is kept, so the
    choice does not depend on how the samples were batched. A negative score (or NaN) marks
    a sample never to show (a right prediction).
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self._kept: dict[str, torch.Tensor] | None = None  # "score" and the rows, (<= n, ...)

    def update(self, score: torch.Tensor, **rows: torch.Tensor) -> None:
        """One batch: `score` (B,), and each of `rows` (B, ...)."""
        if self.n == 0:
            return
        candidates = self._first_n({"score": score.float(), **rows})
        if self._kept is not None:
            candidates = self._first_n(
                {key: torch.cat([self._kept[key], value]) for key, value in candidates.items()}
            )
        self._kept = candidates

    def _first_n(self, rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The `n` highest scores and the rows that go with them, earlier rows first on ties."""
        order = torch.sort(rows["score"], descending=True, stable=True).indices[: self.n]
        return {key: value[order.to(value.device)] for key, value in rows.items()}

    def result(self) -> dict[str, torch.Tensor] | None:
        """The kept samples (fewer than `n` when there were fewer), worst first, on the CPU:
        "score" and the rows; None when there is none."""
        if self._kept is None:
            return None
        kept = {key: value.cpu() for key, value in self._kept.items()}
        shown = kept["score"] >= 0  # (NaN scores, from non-finite outputs, are dropped too)
        return {key: value[shown] for key, value in kept.items()} if shown.any() else None
