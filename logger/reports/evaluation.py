"""test.py's report on one checkpoint, from the kinds it tries to the files it writes.

test.py makes one when the copy has this package (the `reports` unit); a copy without it
writes the metrics alone."""

import logging
from collections.abc import Iterator
from pathlib import Path

from torch import nn

from logger.reports.output import picture_paths, remove_stale, table, tensorboard_dir, write_report
from logger.reports.recorder import ReportRecorder
from logger.reports.report import Report, ReportResult
from utils.checkpoint.files import check_writable

logger = logging.getLogger(__name__)


class EvaluationReport:
    """`kinds` are the reports to try, in order, `named` the config key that named the one kind
    (None for `auto`), `worst` how many of the worst samples to draw. Every picture any kind
    of report may draw beside `checkpoint` (`picture_names`) is checked writable at once, rather
    than after an evaluation that may take long; an earlier evaluation's are removed."""

    def __init__(self, checkpoint: Path, kinds: list[type[Report]], named: str | None,
                 worst: int, picture_names: list[str]) -> None:  # fmt: skip
        self.checkpoint, self.kinds, self.named, self.worst = checkpoint, kinds, named, worst
        self.pictures = picture_paths(checkpoint, picture_names)
        for path in self.pictures.values():
            check_writable(path)
        self.recorder: ReportRecorder | None = None
        self.result: ReportResult | None = None

    def watch(self, model: nn.Module | None, data_loader) -> Iterator:
        """`data_loader`'s batches, unchanged, with the model's output on each recorded."""
        candidates = [kind(data_loader, self.worst) for kind in self.kinds]
        self.recorder = ReportRecorder(model, candidates, self.named)
        return self.recorder.watch(data_loader)

    def finish(self, step: int) -> dict | None:
        """The report's entry in test_metrics.json (its table logged), or None without one."""
        self.result = self.recorder.finish(f"{self.checkpoint.name} (step {step})")
        if self.result is None:
            return None
        logger.info("%s report:\n%s", self.recorder.report.name, table(self.result.rows))
        return {"kind": self.recorder.report.name, **self.result.summary}

    def write(self, config: dict, step: int) -> None:
        """The pictures beside the checkpoint and in TensorBoard; earlier ones removed."""
        remove_stale(self.pictures, self.result.pictures if self.result is not None else {})
        if self.result is not None:
            log_dir = tensorboard_dir(self.checkpoint, config)
            write_report(self.result, self.recorder.report.name, self.checkpoint, log_dir, step)
