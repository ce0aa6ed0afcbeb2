"""Exceptions that entry scripts turn into a one-line message: `UserError` (exit code 2) and
`TrainingFailed` (exit code 1)."""

import difflib
import re
import reprlib
from collections.abc import Iterable
from typing import Any


class TrainingFailed(Exception):
    """Training cannot go on (e.g. a non-finite loss); the message says where it stopped and
    which checkpoint holds the last good state."""


class UserCodeFailed(TrainingFailed):
    """Training stopped because the user's own code raised (their dataset): the entry script
    shows that error's traceback (the `__cause__`), which they need, before the line."""


class UserError(Exception):
    """A mistake in the user's config, command line or files, not a bug in the template; the
    message must name the offending key or file and say what would be valid."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """Suffix for an error message: close matches of `name`, or the valid names if few. A
    name that differs only in case and underscores comes first (`mse_loss`: 'MSELoss'), then
    one it abbreviates (`val_mae`: 'val_MeanAbsoluteError'), then names it begins (`grace`:
    'grace_period')."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid)  # at most 3, similarity >= 0.6
    folded = [v for v in valid if _folded(v) == _folded(name)]
    initials = [v for v in valid if _initials(v) == name.lower() != v.lower()]
    begun = [v for v in valid if len(name) >= 3 and v.startswith(name)]
    close = list(dict.fromkeys(folded + initials + begun + close))[:3]
    if close:
        return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "; valid: " + ", ".join(valid) if 0 < len(valid) <= 12 else ""


def _folded(name: str) -> str:
    return name.replace("_", "").lower()


def _initials(name: str) -> str:
    """`val_MeanAbsoluteError` -> `val_mae`: each capitalised word by its first letter."""
    return re.sub(r"[A-Z][a-z0-9]+", lambda word: word[0][0], name).lower()


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (torch's often go on for several);
    a `KeyError`'s key without the quotes its `str` adds."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    return next((line.strip() for line in str(message).splitlines() if line.strip()), "")


def error_summary(error: BaseException) -> str:
    """`Type: first line of the message`, for one-line reports of an unexpected failure."""
    line = first_line(error)
    return f"{type(error).__name__}: {line}" if line else type(error).__name__


class _Repr(reprlib.Repr):
    """`repr`, bounded at every level (so a huge or shared value prints fast), and huge
    integers by their size (Python refuses to write out more than 4300 digits)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = 80
        self.maxlevel = 3

    def repr_int(self, value: int, level: int) -> str:
        if value.bit_length() > 1024:
            return f"<an integer of {value.bit_length()} bits>"
        return super().repr_int(value, level)


_REPR = _Repr()


def one_line(problems: list[str], most: int = 10) -> str:
    """The distinct problems, ` | ` between them; past `most`, only how many more there are."""
    problems = list(dict.fromkeys(problems))
    if len(problems) > most:
        more = f" (and {len(problems) - most} more)"
        problems = [*problems[: most - 1], problems[most - 1] + more]
    return " | ".join(problems)


def cut(text: str, limit: int = 100) -> str:
    """`text`, shortened to `limit` characters with `...` where it was cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(value: Any) -> str:
    """`repr(value)` for an error message: at most 100 characters, whatever the value."""
    return cut(_REPR.repr(value))
