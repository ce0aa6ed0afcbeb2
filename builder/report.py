"""The evaluation report `test.report` (or a trainer's own `report`) names: a kind of `Report`
from the modules of logger/reports/, the `reports` unit. A copy made without that package has
no kinds: `auto` then makes no report, and test.py writes the metrics alone."""

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING

from base import BaseTrainer
from utils.config.build import is_subclass_of
from utils.errors import UserError, did_you_mean
from utils.units import has_unit, missing_unit

if TYPE_CHECKING:
    from logger.reports.evaluation import EvaluationReport
    from logger.reports.report import Report

AUTO = ("classification", "reconstruction", "regression")  # what `auto` tries, in this order


def reports_available() -> bool:
    """Whether this copy has logger/reports/ (the `reports` unit)."""
    return has_unit("logger.reports")


def report_kinds() -> dict[str, type["Report"]]:
    """Every concrete `Report` defined in a module of logger/reports/, by its `name`."""
    if not reports_available():
        return {}
    import logger.reports
    from logger.reports.report import Report

    kinds: dict[str, type[Report]] = {}
    for info in pkgutil.iter_modules(logger.reports.__path__):
        module = importlib.import_module(f"logger.reports.{info.name}")
        for value in vars(module).values():
            if is_subclass_of(Report)(value) and value.__module__ == module.__name__:
                if value.name in kinds:
                    raise UserError(
                        f"test.report: {value.name!r} names {kinds[value.name].__name__} and "
                        f"{value.__name__} in logger/reports/; rename one of them"
                    )
                kinds[value.name] = value
    return kinds


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
    kinds = report_kinds()
    if name == "auto":
        return [kinds[kind] for kind in AUTO if kind in kinds], None
    if not kinds:
        raise missing_unit(f"{key}: {name!r} is not a report", "logger/reports/", "reports",
                           "'auto' or 'none'")  # fmt: skip
    if name not in kinds:
        valid = ["auto", "none", *kinds]
        raise UserError(
            f"{key}: {name!r} is not a report of logger/reports/{did_you_mean(name, valid)}"
        )
    return [kinds[name]], key


def evaluation_report(
    config: dict, trainer_type: type[BaseTrainer], checkpoint: Path, worst: int
) -> "EvaluationReport":
    """test.py's report on `checkpoint`; its pictures' paths are checked writable now."""
    from logger.reports.evaluation import EvaluationReport

    kinds, named = reports_to_try(config, trainer_type)
    pictures = [name for kind in report_kinds().values() for name in kind.pictures]
    return EvaluationReport(checkpoint, kinds, named, worst, pictures)
