"""Reading, overriding and validating the run config.

The config is a plain dict from start to end: what the file says, with command-line
overrides applied and documented defaults filled in. `resolve_config` is the single place
that knows which keys exist, so a typo anywhere is caught before anything is built.
"""

import copy
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

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
_COUNT = Key((int,), check=lambda v: v >= 1, valid="an integer >= 1")

TOP_LEVEL_KEYS = {
    "name": Key(
        (str,), check=lambda v: bool(v) and "/" not in v, valid="a non-empty name without '/'"
    ),
    "n_gpu": Key((int,), 1, lambda v: v >= 0, "an integer >= 0"),
    "seed": Key((int, type(None)), None, lambda v: v is None or v >= 0, "an integer >= 0 or null"),
    "arch": Key(_NODE),
    "data_loader": Key(_NODE),
    "optimizer": Key(_NODE),
    "loss": Key((str, dict)),
    "metrics": Key((list,), []),
    "lr_scheduler": Key((dict, type(None)), None),
    "trainer": Key((dict,)),
}

TRAINER_KEYS = {
    "epochs": _COUNT,
    "save_dir": Key((str,), "saved/"),
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


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars: `1e-3` is a float (1.1 insists on a dot), and only
    true/false are booleans (1.1 also reads `off`, `no`, `on`, `yes`; `monitor: off` is a string).
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
_FLOAT = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_config_file(path: str | Path) -> dict:
    """Read a JSON or YAML config, chosen by the file extension."""
    path = Path(path)
    if path.suffix not in (".json", ".yaml", ".yml"):
        raise UserError(f"config file {path}: unknown extension; valid: .json, .yaml, .yml")
    try:
        text = path.read_text()
    except OSError as error:
        raise UserError(f"config file {path}: cannot be read ({error.strerror})") from None
    try:
        config = json.loads(text) if path.suffix == ".json" else yaml.load(text, _Loader)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        detail = " ".join(str(error).split())
        raise UserError(
            f"config file {path}: not valid {path.suffix[1:].upper()}: {detail}"
        ) from None
    if not isinstance(config, dict):
        raise UserError(f"config file {path}: the top level must be a mapping of keys")
    return config


def parse_value(text: str) -> Any:
    """Parse a command-line override value as a YAML scalar (`3`, `0.1`, `1e-3`, `true`, `null`)."""
    try:
        return yaml.load(text, _Loader)
    except yaml.YAMLError:
        return text


def apply_overrides(config: dict, overrides: Iterable[str]) -> dict:
    """Return a copy of `config` with each `dotted.key=value` applied; validation comes later."""
    config = copy.deepcopy(config)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"-o {item!r}: expected KEY=VALUE, e.g. trainer.epochs=3")
        *parents, last = key.split(".")
        node = config
        for depth, part in enumerate(parents):
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                path = ".".join(parents[: depth + 1])
                raise UserError(f"-o {key}: {path} is not a mapping, so it has no key {last!r}")
        node[last] = parse_value(text)
    return config


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
            errors.append(f"{prefix}{key}: unknown key{did_you_mean(str(key), keys)}")
    resolved = {}
    for key, spec in keys.items():
        resolved[key] = None if spec.default is _REQUIRED else copy.deepcopy(spec.default)
        if key not in section:
            if spec.default is _REQUIRED:
                errors.append(f"{prefix}{key}: missing; this key is required")
            continue
        value = section[key]
        # bool is a subclass of int: true is never an integer here, nor 1 a boolean.
        if isinstance(value, bool):
            type_ok = bool in spec.types
        else:
            type_ok = isinstance(value, tuple(t for t in spec.types if t is not bool))
        if not type_ok:
            valid = spec.valid or " or ".join(_type_name(t) for t in spec.types)
            errors.append(f"{prefix}{key}: {value!r} is not valid; expected {valid}")
        elif spec.check is not None and value is not None and not spec.check(value):
            errors.append(f"{prefix}{key}: {value!r} is not valid; expected {spec.valid}")
        else:
            resolved[key] = value
    return resolved


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


def check_node(node: Any, path: str, errors: list[str], allow_name: bool = False) -> dict:
    """Validate a `{"type": NAME, "args": {...}}` node and return it with `args` filled in.

    With `allow_name`, a bare name (`"nll_loss"`) stands for a node without arguments.
    Problems are appended to `errors`.
    """
    if allow_name and isinstance(node, str):
        return {"type": node, "args": {}}
    if not isinstance(node, dict):
        errors.append(f'{path}: expected {{"type": NAME, "args": {{...}}}}, got {node!r}')
        return {"type": None, "args": {}}
    for key in node:
        if key not in ("type", "args"):
            errors.append(f"{path}.{key}: unknown key{did_you_mean(str(key), ['type', 'args'])}")
    if not isinstance(node.get("type"), str) or not node["type"]:
        errors.append(f"{path}.type: missing or not a string; expected a class or function name")
    args = node.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        errors.append(f"{path}.args: {args!r} is not valid; expected a mapping of arguments")
        args = {}
    return {"type": node.get("type"), "args": args}


def _check_loader_args(args: dict, errors: list[str]) -> None:
    """Range checks on the arguments every data loader of the template shares."""
    batch_size = args.get("batch_size")
    if batch_size is not None and (type(batch_size) is not int or batch_size < 1):
        errors.append(
            f"data_loader.args.batch_size: {batch_size!r} is not valid; expected an integer >= 1"
        )
    split = args.get("validation_split")
    if split is not None and not (
        (type(split) is float and 0.0 <= split < 1.0) or (type(split) is int and split >= 0)
    ):
        errors.append(
            f"data_loader.args.validation_split: {split!r} is not valid; expected a fraction "
            "in [0, 1) or a number of samples >= 0"
        )


def _check_monitor(resolved: dict, errors: list[str]) -> None:
    """The monitored value must be one the run logs: `loss`, a metric, or `val_` of either."""
    mode, metric = parse_monitor(resolved["trainer"]["monitor"]) or ("off", "")
    if mode == "off":
        return
    names = ["loss", *(node["type"] for node in resolved["metrics"] if node["type"])]
    logged = names + ["val_" + name for name in names]
    if metric not in logged:
        errors.append(
            f"trainer.monitor: {metric!r} is not logged by this run{did_you_mean(metric, logged)}"
        )


def resolve_config(config: dict) -> dict:
    """Validate the whole config and return it with every default written out.

    Every problem found is reported at once, in one `UserError` (one line, ` | ` between them).
    """
    errors: list[str] = []
    resolved = _check_keys(config, TOP_LEVEL_KEYS, "", errors)
    for key in ("arch", "data_loader", "optimizer"):
        resolved[key] = check_node(resolved[key], key, errors)
    resolved["loss"] = check_node(resolved["loss"], "loss", errors, allow_name=True)
    if resolved["lr_scheduler"] is not None:
        resolved["lr_scheduler"] = check_node(resolved["lr_scheduler"], "lr_scheduler", errors)
    resolved["metrics"] = [
        check_node(m, f"metrics[{i}]", errors, allow_name=True)
        for i, m in enumerate(resolved["metrics"] or [])
    ]
    resolved["trainer"] = _check_keys(resolved["trainer"] or {}, TRAINER_KEYS, "trainer.", errors)
    _check_loader_args(resolved["data_loader"]["args"], errors)
    _check_monitor(resolved, errors)
    for key, value in _walk(resolved):
        if isinstance(value, float) and not math.isfinite(value):
            errors.append(f"{key}: {value!r} is not valid; expected a finite number")
    if errors:
        raise UserError(" | ".join(dict.fromkeys(errors)))
    return resolved


def _walk(node: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{prefix}.{key}" if prefix else str(key))
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
        f"{key}: {before.get(key, missing)!r} -> {after.get(key, missing)!r}".replace(
            repr(missing), "(absent)"
        )
        for key in sorted(before.keys() | after.keys())
        if before.get(key, missing) != after.get(key, missing)
    ]


def load_run_config(
    config_file: str | Path | None, checkpoint: dict | None, overrides: Iterable[str]
) -> dict:
    """The config a run uses: `config_file`, else the checkpoint's own, with `overrides`
    applied and validated. A checkpoint's model must be the config's `arch`."""
    raw = load_config_file(config_file) if config_file else checkpoint["config"]
    config = resolve_config(apply_overrides(raw, overrides))
    if checkpoint is not None and checkpoint["arch"] != config["arch"]["type"]:
        raise UserError(
            f"arch.type: the checkpoint holds a {checkpoint['arch']!r} model, "
            f"not {config['arch']['type']!r}; use a config with that arch"
        )
    return config
