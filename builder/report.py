"""The evaluation report `test.report` (or a trainer's own `report`) names: a kind of `Report`
from the modules of logger/reports/, the `reports` unit. A copy made without that package has
no kinds: `auto` then makes no report, and test.py writes the metrics alone."""

from pathlib import Path
from typing import TYPE_CHECKING

from base import BaseTrainer
from utils.units import has_unit, missing_unit

if TYPE_CHECKING:
    from logger.reports.evaluation import EvaluationReport
    from logger.reports.report import Report


def reports_available() -> bool:
    """Whether this copy has logger/reports/ (the `reports` unit)."""
    return has_unit("logger.reports")


def reports_to_try(
    config: dict, trainer_type: type[BaseTrainer]
) -> tuple[list[type["Report"]], str | None]:
    """The kinds of report test.py tries on the first batch, in order, and the key that named
    the one kind (None for `auto`: the first that fits is made). `test.report: auto` makes
    the trainer's own `report` when it names one."""
    name, key = config["test"]["report"], "test.report"
    if name == "auto" and trainer_type.report is not None:
        name, key = trainer_type.report, f"{trainer_type.__name__}.report"
    if name == "none":
        return [], key
    if not reports_available():
        if name == "auto":
            return [], None
        raise missing_unit(f"{key}: {name!r} is not a report", "logger/reports/", "reports",
                           "'auto' or 'none'")  # fmt: skip
    from logger.reports.kinds import kinds_to_try

    return kinds_to_try(name, key)


def evaluation_report(
    config: dict, trainer_type: type[BaseTrainer], checkpoint: Path, worst: int
) -> "EvaluationReport":
    """test.py's report on `checkpoint`; its pictures' paths are checked writable now."""
    from logger.reports.evaluation import EvaluationReport
    from logger.reports.kinds import report_kinds

    kinds, named = reports_to_try(config, trainer_type)
    pictures = [name for kind in report_kinds().values() for name in kind.pictures]
    return EvaluationReport(checkpoint, kinds, named, worst, pictures)
