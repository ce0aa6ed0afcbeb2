"""Loading a saved state (a model's weights, an optimizer's, a scheduler's, a scaler's) into
the built object it belongs to, once it is seen to fit: `torch`'s own `load_state_dict` takes
almost anything and fails later, mid-run, or not at all. A misfit is a `FieldError` naming
the checkpoint field.
"""

from collections.abc import Callable
from typing import Any

import torch

from utils.checkpoint.fields import FieldError, child, invalid, is_number
from utils.errors import error_summary


def _kind(saved: Any, template: Any) -> tuple[str, bool]:
    """What a value must be where `template` is, and whether `saved` is that."""
    if isinstance(template, bool):
        return "true, false or None", saved is None or isinstance(saved, bool)
    if is_number(template):
        return "a number", is_number(saved)
    if isinstance(template, torch.Tensor):
        fits = isinstance(saved, torch.Tensor) and saved.shape == template.shape
        return f"a tensor of shape {tuple(template.shape)}", fits
    if isinstance(template, list | tuple):
        fits = isinstance(saved, list | tuple) and len(saved) == len(template)
        return f"a list of {len(template)} items", fits
    if isinstance(template, str | dict):
        kind = "a string" if isinstance(template, str) else "a mapping"
        return kind, isinstance(saved, type(template))
    return "anything", True  # where the template holds None


def check_like(saved: Any, template: Any, field: str, partial: bool = False) -> None:
    """`saved` has the layout of `template`, the state of the object it goes into: its keys
    (but `_private` ones, which come and go between torch versions, or any with `partial`),
    sequences of its lengths, values of its kinds; where `template` holds None, anything."""
    kind, fits = _kind(saved, template)
    if not fits:
        raise invalid(field, saved, kind)
    if isinstance(template, list | tuple):
        for index, (item, own) in enumerate(zip(saved, template, strict=True)):
            check_like(item, own, f"{field}[{index}]", partial)
    elif isinstance(template, dict):
        for key, own in template.items():
            if key in saved:
                check_like(saved[key], own, child(field, key), partial)
            elif not partial and not str(key).startswith("_"):
                raise FieldError(child(field, key), "missing")


def _load(load: Callable[[Any], Any], saved: Any, field: str, what: str = "does not load") -> None:
    """`load(saved)`, the error of a state torch's own checks refuse a `FieldError`."""
    try:
        load(saved)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise FieldError(field, f"{what} ({error_summary(error)})") from None


def load_like(target: Any, saved: Any, field: str) -> None:
    """`target.load_state_dict(saved)` (a scheduler, a scaler), once `saved` is like its own."""
    check_like(saved, target.state_dict(), field)
    _load(target.load_state_dict, saved, field)


def load_optimizer_state(
    optimizer: torch.optim.Optimizer,
    saved: dict,
    field: str,
    load: Callable[[dict], None] | None = None,
) -> None:
    """`optimizer.load_state_dict(saved)` (or `load(saved)`: a sharded optimizer's), once the
    saved groups match the optimizer's (count, parameters, hyperparameter kinds: torch counts
    them only as it loads, a sharded optimizer's loader not at all) and each state tensor fits
    its parameter (`_check_optimizer_state`)."""
    groups, own = saved["param_groups"], optimizer.state_dict()["param_groups"]
    name = type(optimizer).__name__
    if len(groups) != len(own):
        problem = f"{len(groups)} groups, but this run's {name} has {len(own)}"
        raise FieldError(f"{field}.param_groups", problem)
    parameters = {}
    for index, (group, mine, live) in enumerate(
        zip(groups, own, optimizer.param_groups, strict=True)
    ):
        where = f"{field}.param_groups[{index}]"
        if len(group["params"]) != len(mine["params"]):
            problem = f"{len(group['params'])} parameters, but this run's group has "
            raise FieldError(where, problem + str(len(mine["params"])))
        parameters.update(zip(group["params"], live["params"], strict=True))
        check_like({k: v for k, v in group.items() if k != "params"}, mine, where, partial=True)
    _check_optimizer_state(saved["state"], parameters, field)
    _load(load or optimizer.load_state_dict, saved, field)
    for index, group in enumerate(optimizer.param_groups):
        missing = sorted(set(optimizer.defaults) - set(group))
        if missing:  # (torch has filled in those that its newer versions added)
            problem = f"has no {', '.join(missing)}: it is not the state of a {name}"
            raise FieldError(f"{field}.param_groups[{index}]", problem)


def _check_optimizer_state(state: dict, parameters: dict[int, torch.Tensor], field: str) -> None:
    """Each saved state tensor fits its parameter (torch's load takes any shape), and the
    parameters of one rank have state under the same names (Adafactor keeps other names
    for matrices)."""
    names: dict[int, set[str]] = {}  # what the optimizer keeps for a parameter, by its rank
    for number, entry in state.items():
        shape, where = parameters[number].shape, child(f"{field}.state", number)
        kept = names.setdefault(len(shape), set(entry))
        if set(entry) != kept:
            problem = f"holds {sorted(entry)}; others of rank {len(shape)} hold {sorted(kept)}"
            raise FieldError(where, problem)
        for key, tensor in entry.items():
            if not _fits(tensor.shape, shape):
                expected = f"a tensor of its parameter's shape {tuple(shape)}"
                raise invalid(child(where, key), tensor, expected)


def _fits(saved: torch.Size, shape: torch.Size) -> bool:
    """An optimizer's per-parameter tensor: 0-d (a step count), or the parameter's shape,
    where a factored optimizer (Adafactor) may keep 1 along some dimensions."""
    if len(saved) != len(shape):
        return len(saved) == 0
    return all(n in (1, own) for n, own in zip(saved, shape, strict=True))


def load_weights(
    model: torch.nn.Module,
    weights: dict[str, Any],
    field: str = "state_dict",
    load: Callable[[dict], None] | None = None,
) -> None:
    """Load a state dict of weights (tensors, as `check_fields` sees them) into `model` (or
    `load(weights)`: a sharded model's); if they do not fit, name the missing, unexpected and
    mis-shaped keys (a `FieldError` on `field` of the checkpoint)."""
    own = model.state_dict()
    missing = [key for key in own if key not in weights]
    unexpected = [key for key in weights if key not in own]
    shapes = [
        f"{key} {tuple(weights[key].shape)} (the model's: {tuple(own[key].shape)})"
        for key in own
        if key in weights and weights[key].shape != own[key].shape
    ]
    problems = [
        f"{what} {_some(keys)}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
        if keys
    ]
    if problems:
        raise FieldError(
            field, f"the weights do not fit this model ({'; '.join(problems)}); arch and "
            "arch.args must be those it was trained with"
        )  # fmt: skip
    _load(load or model.load_state_dict, weights, field, "the weights do not load")


def _some(items: list[str], shown: int = 3) -> str:
    """`a, b, c and 4 more`."""
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more
