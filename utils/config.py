"""Validating the run config (read, and overridden from the command line, in config_file.py).

The config is a plain dict from start to end: what the file says, with command-line
overrides applied and documented defaults filled in. `resolve_config` is the single place
that knows which keys exist, so a typo anywhere is caught before anything is built.
"""

import copy
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.config_file import (
    apply_overrides,
    key_text,
    load_config_file,
    shape_problem,
    shown,
    value_problems,
)
from utils.errors import UserError, did_you_mean

_REQUIRED = object()


@dataclass(frozen=True)
class Key:
    """One config key: the types it accepts, its default, and an optional range check."""

    types: tuple[type, ...]
    default: Any = _REQUIRED
    check: Callable[[Any], bool] | None = None
    valid: str = ""  # what a valid value looks like, for the error message


_NODE = (dict,)  # {"type": ..., "args": {...}}
SCHEDULER_KEYS = {  # beside "type" and "args" in an lr_scheduler node
    "interval": Key(
        (str, type(None)),
        None,
        lambda v: v in ("epoch", "step"),
        "'epoch', 'step' or null (OneCycleLR: step, others: epoch)",
    ),
}
_COUNT = Key((int,), check=lambda v: v >= 1, valid="an integer >= 1")


def is_path_component(name: str) -> bool:
    """Whether `name` can be one directory inside another (a run's `name` is one under
    `save_dir`): not empty, not `.` or `..`, no `/`, at most 255 bytes (a file system's limit)."""
    return name not in ("", ".", "..") and "/" not in name and len(name.encode()) <= 255


TOP_LEVEL_KEYS = {
    "name": Key(
        (str,),
        check=is_path_component,
        valid="a directory name: not '', '.' or '..', without '/', at most 255 bytes",
    ),
    "n_gpu": Key((int,), 1, lambda v: v >= 0, "an integer >= 0"),
    # Below 2**32 every generator (Python's, NumPy's, torch's) takes the seed as it is;
    # NumPy would reduce a larger one modulo 2**32, giving two seeds one stream.
    "seed": Key(
        (int, type(None)),
        None,
        lambda v: 0 <= v < 2**32,
        "an integer >= 0 and < 2**32, or null (a random one)",
    ),
    "arch": Key(_NODE),  # a node, or a mapping of model names to nodes
    "data_loader": Key(_NODE),
    "optimizer": Key(_NODE),  # a node (for every model), or a mapping of model names to nodes
    "loss": Key((str, dict, type(None)), None),
    "metrics": Key((list,), []),
    "lr_scheduler": Key((dict, type(None)), None),
    "trainer": Key((dict,)),
    "code_version": Key((dict, type(None)), None),  # written by train.py: git commit, dirty
}

TRAINER_KEYS = {
    "type": Key((str,), "Trainer"),
    "hooks": Key((list,), []),
    "epochs": _COUNT,
    "save_dir": Key((str,), "saved/", lambda v: v != "", "a directory, such as 'saved/'"),
    "save_period": Key((int,), 1, lambda v: v >= 1, "an integer >= 1"),
    "keep_last": Key(
        (int, type(None)), None, lambda v: v is None or v >= 1, "an integer >= 1 or null"
    ),
    "verbosity": Key((int,), 2, lambda v: v in (0, 1, 2), "0, 1 or 2"),
    "monitor": Key(
        (str,), "off", lambda v: parse_monitor(v) is not None, "'off', 'min METRIC' or 'max METRIC'"
    ),
    "early_stop": Key((int,), 0, lambda v: v >= 0, "an integer >= 0 (0 turns it off)"),
    "tensorboard": Key((bool,), True),
    "log_images": Key((bool,), True),
    "len_epoch": Key(
        (int, type(None)), None, lambda v: v is None or v >= 1, "an integer >= 1 or null"
    ),
    "log_step": Key((int,), 10, lambda v: v >= 1, "an integer >= 1"),
    "progress_bar": Key((bool,), True),
    "amp": Key(
        (str, bool), False, lambda v: v in ("bf16", "fp16", False), "'bf16', 'fp16' or false"
    ),
    "accumulate_steps": Key((int,), 1, lambda v: v >= 1, "an integer >= 1"),
    "clip_grad_norm": Key(
        (int, float, type(None)), None, lambda v: v > 0, "a number > 0 or null (no clipping)"
    ),
    "compile": Key(
        (bool, dict), False, valid="true, false or a mapping of torch.compile arguments"
    ),
    "channels_last": Key((bool,), False),
    "cudnn_benchmark": Key((bool,), False),
    "on_nonfinite": Key(
        (str, type(None)),
        None,
        lambda v: v in ("stop", "skip"),
        "'stop', 'skip' or null (no check: no host sync per step)",
    ),
    "max_skipped": Key((int,), 10, lambda v: v >= 1, "an integer >= 1"),
    "save_every_steps": Key(
        (int, type(None)), None, lambda v: v >= 1, "an integer >= 1 or null (only per epoch)"
    ),
}


def parse_monitor(monitor: str) -> tuple[str, str] | None:
    """`"min val_loss"` -> `("min", "val_loss")`; `"off"` -> `("off", "")`; invalid -> None."""
    if monitor == "off":
        return ("off", "")
    mode, _, metric = monitor.partition(" ")
    if mode in ("min", "max") and metric and " " not in metric:
        return (mode, metric)
    return None


def _check_keys(section: dict, keys: dict[str, Key], prefix: str, errors: list[str]) -> dict:
    """Validate one mapping against its key table; return it with defaults filled in.

    Each problem is appended to `errors` (so that all of them are reported together), and
    a key with a bad value keeps its default in the returned mapping.
    """
    for key in section:
        if key not in keys:
            errors.append(f"{prefix}{key_text(key)}: unknown key{did_you_mean(str(key), keys)}")
    resolved = {}
    for key, spec in keys.items():
        resolved[key] = None if spec.default is _REQUIRED else copy.deepcopy(spec.default)
        if key not in section:
            if spec.default is _REQUIRED:
                errors.append(f"{prefix}{key}: missing; this key is required")
        elif _check_value(section[key], spec, f"{prefix}{key}", errors):
            resolved[key] = section[key]
    return resolved


def _check_value(value: Any, spec: Key, path: str, errors: list[str]) -> bool:
    """Whether `value` is valid for `spec`; if not, the problem is appended to `errors`."""
    # bool is a subclass of int: true is never an integer here, nor 1 a boolean.
    if isinstance(value, bool):
        type_ok = bool in spec.types
    else:
        type_ok = isinstance(value, tuple(t for t in spec.types if t is not bool))
    if not type_ok:
        valid = spec.valid or " or ".join(_type_name(t) for t in spec.types)
        errors.append(f"{path}: {shown(value)} is not valid; expected {valid}")
        return False
    if spec.check is not None and value is not None and not spec.check(value):
        errors.append(f"{path}: {shown(value)} is not valid; expected {spec.valid}")
        return False
    return True


def _type_name(kind: type) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        dict: "a mapping",
        list: "a list",
        type(None): "null",
    }[kind]


def check_node(
    node: Any,
    path: str,
    errors: list[str],
    allow_name: bool = False,
    extra_keys: dict[str, Key] | None = None,
) -> dict:
    """Validate a `{"type": NAME, "args": {...}}` node and return it with `args` filled in.

    With `allow_name`, a bare name (`"nll_loss"`) stands for a node without arguments.
    Problems are appended to `errors`.
    """
    if allow_name and isinstance(node, str):
        return {"type": node, "args": {}}
    if not isinstance(node, dict):
        errors.append(f'{path}: expected {{"type": NAME, "args": {{...}}}}, got {shown(node)}')
        return {"type": None, "args": {}}
    extra_keys = extra_keys or {}
    valid = ["type", "args", *extra_keys]
    for key in node:
        if key not in valid:
            errors.append(f"{path}.{key}: unknown key{did_you_mean(str(key), valid)}")
    if not isinstance(node.get("type"), str) or not node["type"]:
        errors.append(f"{path}.type: missing or not a string; expected a class or function name")
    elif len(node["type"]) > 100:  # the builder's messages show the name in full
        errors.append(
            f"{path}.type: {shown(node['type'])} is not valid; expected a class or function name "
            "(at most 100 characters)"
        )
    args = node.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        errors.append(f"{path}.args: {shown(args)} is not valid; expected a mapping of arguments")
        args = {}
    extras = _check_keys({k: v for k, v in node.items() if k in extra_keys}, extra_keys,
                         f"{path}.", errors)  # fmt: skip
    return {"type": node.get("type"), "args": args, **extras}


def is_named_nodes(node: Any) -> bool:
    """Whether `node` is a mapping of names to nodes (several models), not one node."""
    return isinstance(node, dict) and bool(node) and not {"type", "args"} & set(node)


def check_named_nodes(
    node: Any, path: str, errors: list[str], extra_keys: dict[str, Key] | None = None
) -> dict:
    """`check_node` for a key that takes one node or a mapping of names to nodes."""
    if not is_named_nodes(node):
        return check_node(node, path, errors, extra_keys=extra_keys)
    return {
        name: check_node(child, f"{path}.{name}", errors, extra_keys=extra_keys)
        for name, child in node.items()
    }


# Beyond this, more loader processes only cost memory; 32 keeps a config that asks for up to
# 32 valid on any machine, and a machine with more cores may use them all.
MAX_WORKERS = max(32, os.cpu_count() or 1)

_FLAG = Key((bool,))  # "true or false": YAML 1.2 and JSON read `no` and "false" as strings
LOADER_ARGS = {  # arguments the template's data loaders share, checked where a config gives them
    "batch_size": Key(
        (int,), check=lambda v: 1 <= v <= 2**31 - 1, valid="an integer from 1 to 2**31 - 1"
    ),
    "validation_split": Key(
        (int, float),
        check=lambda v: 0 <= v < 1 if isinstance(v, float) else v >= 0,
        valid="a fraction in [0, 1) or a number of samples >= 0",
    ),
    "num_workers": Key(
        (int,),
        check=lambda v: 0 <= v <= MAX_WORKERS,
        valid=f"an integer from 0 to {MAX_WORKERS} (0: load in the training process)",
    ),
    "shuffle": _FLAG,
    "training": _FLAG,
    "drop_last": _FLAG,
    "download": _FLAG,
    "device_resident": _FLAG,
    "pin_memory": Key((bool, type(None)), valid="true or false, or null (true with a GPU)"),
}

METRIC_ARGS = {  # checks on the arguments of model/metric.py's metrics, before any is built
    "top_k_acc": {"k": _COUNT},
}


def _check_args(args: dict, keys: dict[str, Key], path: str, errors: list[str]) -> None:
    """Check the arguments in `args` that `keys` knows; the others are left to the builder,
    which compares them with the constructor's signature."""
    for key, spec in keys.items():
        if key in args:
            _check_value(args[key], spec, f"{path}.args.{key}", errors)


def resolve_config(
    config: dict, trainer_keys: Callable[[str], dict[str, Key]] | None = None
) -> dict:
    """Validate the whole config and return it with every default written out.

    `trainer_keys(trainer_type)` gives the keys the chosen trainer class takes beyond the
    shared `TRAINER_KEYS` (its own constructor arguments). Every problem found is reported
    at once, in one `UserError` (one line, ` | ` between them).
    """
    # First what the config is made of: no check below could make sense of a cycle or a date.
    problem = shape_problem(config)
    problems = [problem] if problem else list(value_problems(config))
    if problems:
        raise UserError(_one_line(problems))
    errors: list[str] = []
    resolved = _check_keys(config, TOP_LEVEL_KEYS, "", errors)
    for key in ("arch", "optimizer"):
        resolved[key] = check_named_nodes(resolved[key], key, errors)
    resolved["data_loader"] = check_node(resolved["data_loader"], "data_loader", errors)
    if resolved["loss"] is not None:
        resolved["loss"] = check_node(resolved["loss"], "loss", errors, allow_name=True)
    if resolved["lr_scheduler"] is not None:
        resolved["lr_scheduler"] = check_named_nodes(
            resolved["lr_scheduler"], "lr_scheduler", errors, extra_keys=SCHEDULER_KEYS
        )
    resolved["metrics"] = [
        check_node(m, f"metrics[{i}]", errors, allow_name=True)
        for i, m in enumerate(resolved["metrics"] or [])
    ]
    trainer = resolved["trainer"] or {}
    keys = dict(TRAINER_KEYS)
    if trainer_keys is not None and isinstance(trainer.get("type", "Trainer"), str):
        try:
            keys.update(trainer_keys(trainer.get("type", "Trainer")))
        except UserError as error:
            errors.append(str(error))
    resolved["trainer"] = _check_keys(trainer, keys, "trainer.", errors)
    resolved["trainer"]["hooks"] = [
        check_node(node, f"trainer.hooks[{i}]", errors)
        for i, node in enumerate(resolved["trainer"]["hooks"])
    ]
    _check_args(resolved["data_loader"]["args"], LOADER_ARGS, "data_loader", errors)
    for index, node in enumerate(resolved["metrics"]):
        if isinstance(node["type"], str):
            _check_args(node["args"], METRIC_ARGS.get(node["type"], {}), f"metrics[{index}]",
                        errors)  # fmt: skip
    if errors:
        raise UserError(_one_line(errors))
    return resolved


def _one_line(problems: list[str], most: int = 10) -> str:
    """The distinct problems, ` | ` between them; past `most`, only how many more there are."""
    problems = list(dict.fromkeys(problems))
    if len(problems) > most:
        more = f" (and {len(problems) - most} more)"
        problems = [*problems[: most - 1], problems[most - 1] + more]
    return " | ".join(problems)


def _walk(node: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{prefix}.{key_text(key)}" if prefix else key_text(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{prefix}[{index}]")
    else:
        yield prefix, node


def config_changes(old: dict, new: dict) -> list[str]:
    """`key: old -> new` for every value that differs between two resolved configs."""
    before, after = dict(_walk(old)), dict(_walk(new))
    missing = object()
    return [
        f"{key}: {shown(before.get(key, missing))} -> {shown(after.get(key, missing))}".replace(
            shown(missing), "(absent)"
        )
        for key in sorted(before.keys() | after.keys())
        if before.get(key, missing) != after.get(key, missing)
    ]


def load_run_config(
    config_file: str | Path | None,
    checkpoint: dict | None,
    overrides: Iterable[str],
    trainer_keys: Callable[[str], dict[str, Key]] | None = None,
) -> dict:
    """The config a run uses: `config_file`, else the checkpoint's own, with `overrides`
    applied and validated. A checkpoint's models must be the config's `arch`."""
    raw = load_config_file(config_file) if config_file else checkpoint["config"]
    config = resolve_config(apply_overrides(raw, overrides), trainer_keys)
    if checkpoint is not None and checkpoint["arch"] != arch_types(config):
        path = "arch" if is_named_nodes(config["arch"]) else "arch.type"
        raise UserError(
            f"{path}: the checkpoint holds {shown(checkpoint['arch'])}, not "
            f"{shown(arch_types(config))}; use a config with that arch"
        )
    return config


def arch_types(config: dict) -> str | dict[str, str]:
    """The model class name (one model), or the class name of each named model."""
    arch = config["arch"]
    return (
        {name: node["type"] for name, node in arch.items()} if "type" not in arch else arch["type"]
    )
