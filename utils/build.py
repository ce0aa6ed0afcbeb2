"""Turn `{"type": NAME, "args": {...}}` config nodes into objects.

Names are looked up only in the modules the caller designates for that node, and only
among public attributes that pass the caller's `accept` test: no dotted paths, no
builtins, no private names. Runtime objects (the model's parameters, the optimizer) are
passed in by the caller, never written in the config.
"""

import functools
import importlib
import inspect
import pkgutil
import types
import typing
from collections.abc import Callable
from typing import Any

from utils.errors import UserError, did_you_mean, error_summary, first_line


def lookup(
    path: str,
    name: str,
    modules: list[types.ModuleType],
    accept: Callable[[Any], bool],
    where: str | None = None,
) -> Callable:
    """Find `name` in the first of `modules` that has an accepted attribute of that name;
    `where` names the modules in messages (default: each of them)."""
    where = where or " or ".join(module.__name__ for module in modules)
    if not name.isidentifier() or name.startswith("_"):
        raise UserError(
            f"{path}.type: {name!r} is not a public name; names are looked up in {where} only"
        )
    candidates: dict[str, Any] = {}
    for module in reversed(modules):
        for attr, value in vars(module).items():
            if not attr.startswith("_") and accept(value):
                candidates[attr] = value
    if name not in candidates:
        raise UserError(f"{path}.type: {name!r} is not in {where}{did_you_mean(name, candidates)}")
    return candidates[name]


def lookup_in_package(path: str, name: str, package: types.ModuleType,
                      accept: Callable[[Any], bool]) -> Callable:  # fmt: skip
    """`lookup` in a package and each module directly in it (add a file there for a class of
    your own). Its modules are peers: a name that two of them define differently is an
    error naming both, never a silent choice by file name."""
    modules = [package] + [importlib.import_module(f"{package.__name__}.{info.name}")
                           for info in pkgutil.iter_modules(package.__path__)]  # fmt: skip
    where = f"the modules of {package.__name__.replace('.', '/')}/"
    found = lookup(path, name, modules, accept, where)
    defined = {vars(m)[name] for m in modules if name in vars(m) and accept(vars(m)[name])}
    if len(defined) > 1:
        where = " and ".join(
            sorted(f"{value.__module__.replace('.', '/')}.py" for value in defined)
        )
        raise UserError(f"{path}.type: {name!r} is defined in {where}; rename one of them")
    return found


def _check_args(path: str, target: Callable, args: dict, n_runtime: int, runtime: dict) -> None:
    """Name the first config argument `target` cannot take, before anything is called."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return  # some builtins have no signature; the call itself will complain
    title = getattr(target, "__name__", repr(target))
    params = signature.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    settable = [n for n in named[n_runtime:] if n not in runtime]
    for key in args:
        if key not in settable and not takes_any:
            raise UserError(
                f"{path}.args.{key}: {title} takes no argument {key!r}{did_you_mean(key, settable)}"
            )
    try:
        signature.bind(*([None] * n_runtime), **runtime, **args)
    except TypeError as error:
        raise UserError(f"{path}.args: {title}: {error}") from None
    for key, value in args.items():
        default = params[key].default if key in params else None
        if isinstance(value, str) and isinstance(default, int | float):
            # A string where the default is a number fails only when the value is first used
            # (StepLR's `gamma` at its step_size-th step), long after the run has started.
            raise UserError(
                f"{path}.args.{key}: {value!r} is a string; {title} takes a "
                f"{type(default).__name__} here (its default is {default!r})"
            )
    _check_types(path, target, title, args)


def _check_types(path: str, target: Callable, title: str, args: dict) -> None:
    """Each argument against its parameter's type hint, with pydantic: a class with typed
    arguments (`early_stop: int`, `latent_dim: PositiveInt`, `mode: Literal[...]`) is checked
    before anything is built, the user's own too. Values are checked, not converted: the
    object gets what the config says, so a string is refused where the hint is a number."""
    from pydantic import ConfigDict, TypeAdapter, ValidationError  # (0.2 s) when a run builds

    function = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception:  # e.g. a hint naming what its module imports only for type checkers
        return
    for key, value in args.items():
        if key not in hints:
            continue
        try:
            adapter = TypeAdapter(hints[key], config=ConfigDict(arbitrary_types_allowed=True))
        except Exception:  # a hint pydantic cannot check; the call itself will complain
            continue
        try:
            checked = adapter.validate_python(value)
        except ValidationError as error:
            problem = error.errors()[0]
            message = problem["msg"][0].lower() + problem["msg"][1:]
            if _is_choice(hints[key]):  # pydantic's errors are then one per type of the choice
                line = (f"{path}.args.{key}: {value!r} is not valid for {title}: expected "
                        f"{_hint_name(hints[key])}")  # fmt: skip
            elif problem["loc"]:  # an item of a list or mapping
                where = "".join(f"[{part!r}]" for part in problem["loc"])
                line = f"{path}.args.{key}{where}: {message} (in {value!r}, for {title})"
            else:
                line = f"{path}.args.{key}: {value!r} is not valid for {title}: {message}"
            raise UserError(line) from None
        if isinstance(value, str) and not isinstance(checked, str):
            raise UserError(f"{path}.args.{key}: {value!r} is a string; {title} takes "
                            f"{_hint_name(hints[key])} here")  # fmt: skip


def _is_choice(hint: Any) -> bool:
    """A union of several types (`float | list[float]`), not only `X | None`."""
    members = [member for member in typing.get_args(hint) if member is not type(None)]
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and len(members) > 1


def _hint_name(hint: Any) -> str:
    """`int`, `list[float]`, `float or list[float]` (" | " separates a message's problems)."""
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_hint_name(member) for member in typing.get_args(hint))
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def instantiate(
    path: str, target: Callable, args: dict, *runtime_args: Any, **runtime_kwargs: Any
) -> Any:
    """Call `target(*runtime_args, **runtime_kwargs, **args)`, naming bad `args` keys first."""
    _check_args(path, target, args, len(runtime_args), runtime_kwargs)
    try:
        return target(*runtime_args, **runtime_kwargs, **args)
    except UserError:
        raise
    except Exception as error:  # whatever a constructor raises, its arguments caused it
        title = getattr(target, "__name__", repr(target))
        if isinstance(error, ValueError | TypeError):  # messages written for the caller
            detail = first_line(error)
        else:  # e.g. RuntimeError from LeNet's `num_classes: -5`: the arguments show which one
            detail = f"{error_summary(error)} (with args {args})"
        raise UserError(f"{path}.args: {title} rejected its arguments: {detail}") from None


def build_callable(path: str, target: Callable, args: dict, n_inputs: int) -> Callable:
    """A class is instantiated with `args`; a function gets `args` bound after its `n_inputs`
    leading inputs (e.g. `top_k_acc(output, target, k=5)`)."""
    if inspect.isclass(target):
        return instantiate(path, target, args)
    _check_args(path, target, args, n_inputs, {})
    return functools.partial(target, **args) if args else target


def is_subclass_of(*bases: type) -> Callable[[Any], bool]:
    """An `accept` test: a concrete class derived from one of `bases`."""
    return lambda value: (
        inspect.isclass(value) and issubclass(value, bases) and not inspect.isabstract(value)
    )
