"""What each field of a checkpoint must hold, checked before any of it is used.

A checkpoint that loads may still be malformed: edited by hand, written by another program or
an older template. `check_fields` checks what needs no trainer (types, ranges, the layout of
each field) when the file is loaded; `utils.checkpoint.saved_states` checks the rest against the
built parts the states go into. A problem is a `FieldError` naming the field.
"""

import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from utils.config.check import resolve_config
from utils.config.keys import Key
from utils.errors import UserError, cut, error_summary

MAX_COUNT = 2**63  # counters go into int64s (tensors, TensorBoard steps)
COUNTS = ("epoch", "step", "batches_done", "not_improved_count")
RNG_KEYS = ("python", "numpy", "torch", "cuda")
METRIC_KEYS = ("device_totals", "device_counts", "totals", "counts")


class FieldError(UserError):
    """A checkpoint field that does not hold what the template writes there. `path` is the
    file where known: code that loads a state into a trainer does not know where it came
    from, and `naming_checkpoint` adds it."""

    def __init__(self, field: str, problem: str, path: str | Path | None = None) -> None:
        super().__init__(field, problem)
        self.field, self.problem, self.path = field, problem, path

    def __str__(self) -> str:
        where = "checkpoint" if self.path is None else f"checkpoint {self.path}"
        return f"{where}: field '{self.field}': {self.problem}"


@contextmanager
def naming_checkpoint(path: str | Path | None) -> Iterator[None]:
    """Within: a `FieldError` that does not name its file names `path`."""
    try:
        yield
    except FieldError as error:
        error.path = path if error.path is None else error.path
        raise


def describe(value: Any) -> str:
    """A value, short, for an error message (a tensor by its shape, never its contents)."""
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    if isinstance(value, dict):
        return f"a mapping of {len(value)} keys"
    if isinstance(value, list | tuple):
        return f"a {type(value).__name__} of {len(value)} items"
    return cut(repr(value), 60)


def invalid(field: str, value: Any, expected: str, path: str | Path | None = None) -> FieldError:
    return FieldError(field, f"{describe(value)} is not valid; expected {expected}", path)


def child(field: str, key: Any) -> str:
    """`optimizer.state` + 3 -> `optimizer.state[3]`; `state_dict` + `fc.weight` ->
    `state_dict['fc.weight']`; `rng` + `numpy` -> `rng.numpy`."""
    return f"{field}.{key}" if isinstance(key, str) and key.isidentifier() else f"{field}[{key!r}]"


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_count(value: Any, top: int = MAX_COUNT) -> bool:
    return is_int(value) and 0 <= value < top


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _mapping(value: Any, field: str, path: Path, expected: str, keys: tuple = ()) -> dict:
    """`value` as a mapping with string keys, holding each of `keys`."""
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise invalid(field, value, expected, path)
    for key in keys:
        if key not in value:
            raise FieldError(child(field, key), "missing", path)
    return value


def _count(value: Any, field: str, path: Path, top: int = MAX_COUNT) -> None:
    if not is_count(value, top):
        expected = "an integer >= 0" if top == MAX_COUNT else f"an integer from 0 to {top - 1}"
        raise invalid(field, value, expected, path)


def check_fields(state: dict[str, Any], path: Path) -> None:
    """Every field of a loaded checkpoint (all `CHECKPOINT_KEYS` present) holds what the
    template writes there, as far as can be told without the models it goes into."""
    names = _check_arch(state["arch"], path)
    for key in COUNTS:
        _count(state[key], key, path)
    best = state["monitor_best"]
    if not is_number(best) or math.isnan(best):
        raise invalid("monitor_best", best, "a number (the best monitored value so far)", path)
    _by_model(state["state_dict"], "state_dict", names, path, _check_weights, every=True)
    _by_model(state["optimizer"], "optimizer", names, path, _check_optimizer)
    if state["lr_scheduler"] is not None:
        _by_model(state["lr_scheduler"], "lr_scheduler", names, path, _check_state)
    if state["scaler"] is not None:
        _check_state(state["scaler"], "scaler", path)
    config = _mapping(state["config"], "config", path, "the run's config, a mapping")
    _mapping(config.get("trainer"), "config.trainer", path, "a mapping (the trainer's keys)")
    _check_rng(state["rng"], path)
    _check_progress(state["progress"], path)
    hooks = _mapping(state.get("hooks", {}), "hooks", path, "a mapping of hook keys to states")
    for key, hook_state in hooks.items():
        _check_state(hook_state, child("hooks", key), path)


def _check_arch(arch: Any, path: Path) -> list[str] | None:
    """The model names of a checkpoint of several models (None for one model)."""
    if isinstance(arch, str) and arch:
        return None
    if isinstance(arch, dict) and arch and all(isinstance(v, str) and v for v in arch.values()):
        return [str(name) for name in arch]
    raise invalid("arch", arch, "a class name, or a mapping of model names to them", path)


def _by_model(
    value: Any,
    field: str,
    names: list[str] | None,
    path: Path,
    check: Callable[[Any, str, Path], None],
    every: bool = False,
) -> None:
    """`check` the state of the one model, or that of each named model."""
    if names is None:
        check(value, field, path)
        return
    expected = f"a mapping of the models {names} to their states"
    _mapping(value, field, path, expected, tuple(names) if every else ())
    for name, item in value.items():
        if name not in names:
            raise FieldError(child(field, name), f"not a model of this checkpoint ({names})", path)
        check(item, child(field, name), path)


def _check_state(value: Any, field: str, path: Path) -> None:
    _mapping(value, field, path, "a state_dict(), a mapping of names to values")


def _check_weights(value: Any, field: str, path: Path) -> None:
    for key, tensor in _mapping(value, field, path, "a mapping of names to tensors").items():
        if not isinstance(tensor, torch.Tensor):
            raise invalid(child(field, key), tensor, "a tensor", path)


def _check_optimizer(value: Any, field: str, path: Path) -> None:
    """An optimizer's `state_dict()`: `param_groups` numbering the parameters, and `state`
    holding tensors for some of those numbers."""
    expected = "an optimizer's state_dict(), with 'state' and 'param_groups'"
    value = _mapping(value, field, path, expected, ("state", "param_groups"))
    groups, numbers = value["param_groups"], []
    if not isinstance(groups, list):
        raise invalid(f"{field}.param_groups", groups, "a list of parameter groups", path)
    for index, group in enumerate(groups):
        where = f"{field}.param_groups[{index}]"
        params = _mapping(group, where, path, "a mapping", ("params",))["params"]
        if not isinstance(params, list) or not all(is_int(number) for number in params):
            raise invalid(f"{where}.params", params, "a list of parameter numbers", path)
        numbers += params
    if len(set(numbers)) != len(numbers):
        raise FieldError(f"{field}.param_groups", "a parameter number appears twice", path)
    if not isinstance(value["state"], dict):
        raise invalid(f"{field}.state", value["state"], "a mapping of parameter numbers", path)
    for number, entry in value["state"].items():
        where = child(f"{field}.state", number)
        if number not in numbers:
            raise FieldError(where, "not a parameter number of its param_groups", path)
        _check_weights(entry, where, path)  # (its tensors by name, as a model's weights)


def _check_rng(rng: Any, path: Path) -> None:
    """What `utils.seed.get_rng_state` saves, tried on generators of its own (not the
    global ones) where only trying tells."""
    rng = _mapping(rng, "rng", path, "the random generators' states", RNG_KEYS)
    python = rng["python"]
    if not isinstance(python, tuple | list) or len(python) != 3:
        raise invalid("rng.python", python, "random.getstate(): (version, state, gauss)", path)
    if not (python[2] is None or is_number(python[2])):
        raise invalid("rng.python[2]", python[2], "a number or None", path)
    try:
        random.Random().setstate((python[0], tuple(python[1]), python[2]))
    except (TypeError, ValueError, OverflowError, RuntimeError) as error:
        problem = f"not a state of Python's generator ({error_summary(error)})"
        raise FieldError("rng.python", problem, path) from None
    numpy_keys = ("state", "pos", "has_gauss", "gauss")
    numpy = _mapping(rng["numpy"], "rng.numpy", path, "a mapping", numpy_keys)
    key = numpy["state"]
    if not isinstance(key, torch.Tensor) or key.dtype != torch.int64 or key.shape != (624,):
        raise invalid("rng.numpy.state", key, "an int64 tensor of shape (624,)", path)
    _count(numpy["pos"], "rng.numpy.pos", path, top=625)
    _count(numpy["has_gauss"], "rng.numpy.has_gauss", path, top=2)
    if not is_number(numpy["gauss"]):
        raise invalid("rng.numpy.gauss", numpy["gauss"], "a number", path)
    if not isinstance(rng["cuda"], list):
        raise invalid("rng.cuda", rng["cuda"], "a list of CUDA generator states", path)
    for index, value in enumerate(rng["cuda"]):  # (only the global generators could try them)
        if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8 or value.dim() != 1:
            raise invalid(f"rng.cuda[{index}]", value, "a uint8 tensor of one dimension", path)
    try:
        torch.Generator().set_state(rng["torch"])  # (which checks its type and size)
    except (TypeError, RuntimeError) as error:
        problem = f"not a state of torch's generator ({error_summary(error)})"
        raise FieldError("rng.torch", problem, path) from None


def _check_progress(progress: Any, path: Path) -> None:
    """Where the epoch stands (`EpochBatches.position`) and its running means so far
    (`MetricTracker.state_dict`)."""
    keys = ("train_metrics", "passes", "pass_batches")
    progress = _mapping(progress, "progress", path, "a mapping", keys)
    for key in ("passes", "pass_batches"):
        _count(progress[key], f"progress.{key}", path)
    ranks = progress.get("world_size", 1)  # (absent from checkpoints of older versions)
    if not is_count(ranks) or ranks == 0:
        raise invalid("progress.world_size", ranks, "an integer >= 1 (the processes)", path)
    field = "progress.train_metrics"
    metrics = _mapping(progress["train_metrics"], field, path, "a mapping", METRIC_KEYS)
    kinds = {
        "device_totals": ("a 0-d tensor", lambda v: isinstance(v, torch.Tensor) and v.dim() == 0),
        "device_counts": ("an integer >= 0", is_count),
        "totals": ("a number", is_number),
        "counts": ("a number", is_number),
    }
    for key, (expected, valid) in kinds.items():
        for name, value in _mapping(metrics[key], f"{field}.{key}", path, "a mapping").items():
            if not valid(value):
                raise invalid(child(f"{field}.{key}", name), value, expected, path)
    for totals, counts in (("device_totals", "device_counts"), ("totals", "counts")):
        if set(metrics[totals]) != set(metrics[counts]):
            raise FieldError(field, f"its {totals} and {counts} name different values", path)
    stateful = _mapping(metrics.get("stateful", {}), f"{field}.stateful", path, "a mapping")
    for name, states in stateful.items():
        where = child(f"{field}.stateful", name)
        for window, part in _mapping(states, where, path, "a mapping", ("epoch", "window")).items():
            _check_metric_state(part, child(where, window), path)


def _check_metric_state(state: Any, field: str, path: Path) -> None:
    """A torchmetrics metric's state as `MetricTracker` saves it: tensors (or lists of them)
    by state name, and the number of updates."""
    state = _mapping(state, field, path, "a mapping", ("values", "updates"))
    _count(state["updates"], f"{field}.updates", path)
    for key, value in _mapping(state["values"], f"{field}.values", path, "a mapping").items():
        tensors = value if isinstance(value, list) else [value]
        if not all(isinstance(t, torch.Tensor) for t in tensors):
            raise invalid(child(f"{field}.values", key), value, "a tensor or a list of them", path)


def check_config(
    path: str | Path, state: dict[str, Any], trainer_keys: Callable[[str], dict[str, Key]]
) -> None:
    """The checkpoint's own config is valid, as a config file would have to be (for a run
    that uses it: a resume, or test.py without -c)."""
    try:
        resolve_config(state["config"], trainer_keys)
    except UserError as error:
        problem = f"the config it was trained with is not valid: {error}"
        raise FieldError("config", problem, path) from None
