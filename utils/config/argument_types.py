"""Config arguments checked against the type hints of the constructor they go to, with
pydantic, so that typing a class's arguments is all the checking it needs."""

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from utils.errors import UserError, shown


def check_argument_types(path: str, target: Callable, title: str, args: dict) -> None:
    """Each argument against its parameter's type hint, with pydantic: a class with typed
    arguments (`early_stop: int`, `latent_dim: Annotated[int, Gt(0)]`, `mode: Literal[...]`)
    is checked before anything is built, the user's own too. Values are checked, not
    converted: the object gets what the config says, so `true`, `64.0` or `"5"` is refused
    where the hint is an int (a JSON list is taken for a tuple, an int for a float)."""
    from pydantic import ValidationError  # (0.2 s) when a run builds

    function = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception:  # e.g. a hint naming what its module imports only for type checkers
        return
    for key, value in args.items():
        if key not in hints:
            continue
        hint, where = hints[key], f"{path}.args.{key}"
        try:
            adapter = _adapter(hint)
        except Exception:  # a hint pydantic cannot check; the call itself will complain
            continue
        if fits(hint, value):
            continue
        wrong_kind = (
            f"{where}: {shown(value)} is {_kind_name(value)}; {title} takes {hint_name(hint)} here"
        )
        if isinstance(value, bool):  # (lax, true would pass for 1)
            raise UserError(wrong_kind)
        try:
            checked = adapter.validate_python(value)
        except ValidationError as error:
            raise UserError(_problem_line(where, value, title, hint, error)) from None
        if _changed_kind(value, checked):
            raise UserError(wrong_kind)


def fits(hint: Any, value: Any) -> bool:
    """Whether `value` fits the type hint as it is (strictly: true is not 1, "5" not 5). Even
    strict, pydantic matches `Literal[0, 1]` with true and `Literal[False]` with 0 (they are
    equal in Python), and then returns the literal: a value of another kind does not fit."""
    from pydantic import ValidationError

    try:
        checked = _adapter(hint).validate_python(value, strict=True)
    except ValidationError:
        return False
    return not _changed_kind(value, checked)


@functools.cache
def _adapter(hint: Any) -> Any:
    from pydantic import ConfigDict, TypeAdapter

    return TypeAdapter(hint, config=ConfigDict(arbitrary_types_allowed=True))


def _problem_line(where: str, value: Any, title: str, hint: Any, error: Any) -> str:
    problem = error.errors()[0]
    message = problem["msg"][0].lower() + problem["msg"][1:]
    if _is_choice(hint):  # pydantic's errors are then one per type of the choice
        return f"{where}: {shown(value)} is not valid for {title}: expected {hint_name(hint)}"
    if problem["loc"]:  # an item of a list or mapping
        item = "".join(f"[{part!r}]" for part in problem["loc"])
        return f"{where}{item}: {message} (in {shown(value)}, for {title})"
    return f"{where}: {shown(value)} is not valid for {title}: {message}"


SCALAR_KINDS = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}


def _kind(value: Any) -> type | None:
    return next((kind for kind in SCALAR_KINDS if isinstance(value, kind)), None)  # bool first


def _kind_name(value: Any) -> str:
    return SCALAR_KINDS.get(_kind(value), "a collection with an item of another type")


def _changed_kind(value: Any, checked: Any) -> bool:
    """Whether validation made another kind of scalar of `value` or of an item in it ("5"
    into 5, 64.0 into 64); an int taken for a float is no change."""
    if isinstance(value, list | tuple) and isinstance(checked, list | tuple):
        return any(_changed_kind(v, c) for v, c in zip(value, checked, strict=False))
    if isinstance(value, dict) and isinstance(checked, dict):
        return any(_changed_kind(v, checked.get(k)) for k, v in value.items())
    before, after = _kind(value), _kind(checked)
    return None not in (before, after) and before is not after and (before, after) != (int, float)


BOUNDS = {
    "gt": ">",
    "ge": ">=",
    "lt": "<",
    "le": "<=",
    "max_length": "of length <=",
    "min_length": "of length >=",
}  # (annotated_types' names)


def _is_choice(hint: Any) -> bool:
    """A union of several types (`float | list[float]`), not only `X | None`."""
    members = [member for member in typing.get_args(hint) if member is not type(None)]
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and len(members) > 1


def hint_name(hint: Any) -> str:
    """`int`, `float >= 0, < 1` (Annotated with bounds), `float or list[float]` (not with
    " | ", which separates the problems of one message)."""
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is typing.Annotated:
        base, *metadata = typing.get_args(hint)
        bounds = [f"{symbol} {getattr(item, name)}" for item in metadata
                  for name, symbol in BOUNDS.items() if hasattr(item, name)]  # fmt: skip
        return " ".join([hint_name(base), ", ".join(bounds)]).strip()
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(hint_name(member) for member in typing.get_args(hint))
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
