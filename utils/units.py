"""The optional units a copy of the template may lack (copier.yml lists them): whether this
copy has one, and the one line that refuses a setting needing a unit it lacks."""

import importlib.util

from utils.errors import UserError


def has_unit(module: str) -> bool:
    """Whether this copy has `module` (a unit's own module, e.g. `logger.reports`); nothing is
    imported to find out."""
    return importlib.util.find_spec(module) is not None


def missing_unit(setting: str, path: str, unit: str, instead: str) -> UserError:
    """`setting` needs unit `unit`, whose `path` this copy lacks; `instead`: what works here."""
    return UserError(f"{setting}: this copy has no {path} (the {unit} unit; "
                     f"`make update WITH={unit}` adds it), so {instead}")  # fmt: skip
