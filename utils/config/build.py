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
from collections.abc import Callable
from typing import Any

from utils.config.argument_types import check_argument_types
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


def _parameter_names(target: Callable) -> list[str]:
    """The names `target` takes by keyword (none where it has no signature)."""
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _check_args(path: str, target: Callable, args: dict, n_runtime: int, runtime: dict) -> None:
    """Name the first config argument `target` cannot take, before anything is called."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return  # some builtins have no signature; the call itself will complain
    title = getattr(target, "__name__", repr(target))
    params = signature.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = _parameter_names(target)
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
                f"{path}.args.{key}: {value!r} is a string; {title} takes "
                f"{type(default).__name__} here (its default is {default!r})"
            )
    check_argument_types(path, target, title, args)


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
        named = _parameter_names(target)
        for key in args:  # one that **kwargs took in and passed on to be refused (torchmetrics)
            if named and key not in named and {f"`{key}`", f"'{key}'"} & set(str(error).split()):
                raise UserError(f"{path}.args.{key}: {title} takes no argument {key!r}"
                                f"{did_you_mean(key, named)}") from None  # fmt: skip
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
