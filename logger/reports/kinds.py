"""The kinds of report: every concrete `Report` in a module of this package, by its `name`,
and those a `test.report` value (or a trainer's own `report`) makes test.py try."""

import importlib
import pkgutil

import logger.reports
from logger.reports.report import Report
from utils.config.build import is_subclass_of
from utils.errors import UserError, did_you_mean

AUTO = ("classification", "reconstruction", "regression")  # what `auto` tries, in this order


def report_kinds() -> dict[str, type[Report]]:
    """Every concrete `Report` defined in a module of logger/reports/, by its `name`."""
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


def kinds_to_try(name: str, key: str) -> tuple[list[type[Report]], str | None]:
    """The kinds of report `name` (given by config key `key`; not "none") makes test.py try on
    the first batch, in order, and the key that named the one kind (None for `auto`: the
    first that fits)."""
    kinds = report_kinds()
    if name == "auto":
        return [kinds[kind] for kind in AUTO if kind in kinds], None
    if name not in kinds:
        valid = ["auto", "none", *kinds]
        raise UserError(
            f"{key}: {name!r} is not a report of logger/reports/{did_you_mean(name, valid)}"
        )
    return [kinds[name]], key
