"""Validating the run config: a plain dict, the file's with the overrides applied
(utils/config/file.py) and defaults filled in. `resolve_config` is the one place that knows
which keys exist, so a typo anywhere is caught before anything is built."""

import copy
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from utils.config.argument_types import fits
from utils.config.file import data_problems, key_text, load_config_file, walk
from utils.config.keys import (
    LOADER_ARGS,
    METRIC_ARGS,
    METRIC_NODE_KEYS,
    OPTIMIZER_KEYS,
    REQUIRED,
    SCHEDULER_KEYS,
    TEST_KEYS,
    TOP_LEVEL_KEYS,
    TRAINER_KEYS,
    Key,
)
from utils.config.overrides import apply_overrides
from utils.errors import UserError, did_you_mean, one_line, shown


def _check_keys(section: dict, keys: dict[str, Key], prefix: str, errors: list[str]) -> dict:
    """One mapping with defaults filled in (a bad value keeps its default); each problem is
    appended to `errors`, so that all of them are reported together."""
    for key in section:
        if key not in keys:
            errors.append(f"{prefix}{key_text(key)}: unknown key{did_you_mean(str(key), keys)}")
    resolved = {}
    for key, spec in keys.items():
        resolved[key] = None if spec.default is REQUIRED else copy.deepcopy(spec.default)
        if key not in section:
            if spec.default is REQUIRED:
                errors.append(f"{prefix}{key}: missing; this key is required")
        elif _check_value(section[key], spec, f"{prefix}{key}", errors):
            resolved[key] = section[key]
    return resolved


def _check_value(value: Any, spec: Key, path: str, errors: list[str]) -> bool:
    """Whether `value` fits `spec`'s hint; if not, the problem is appended to `errors`."""
    if fits(spec.hint, value):
        return True
    errors.append(
        f"{path}: {shown(value)} is not valid; expected {spec.valid or _described(spec.hint)}"
    )
    return False


def _described(hint: Any) -> str:
    """`str | dict | None` -> "a string or a mapping or null", for a key without `valid`."""
    names = {str: "a string", bool: "true or false", dict: "a mapping", list: "a list",
             type(None): "null"}  # fmt: skip
    return " or ".join(names[kind] for kind in typing.get_args(hint) or (hint,))


def check_node(
    node: Any,
    path: str,
    errors: list[str],
    allow_name: bool = False,
    extra_keys: dict[str, Key] | None = None,
) -> dict:
    """A `{"type": NAME, "args": {...}}` node with `args` filled in; with `allow_name`, a bare
    name (`"nll_loss"`) stands for a node without arguments."""
    extra_keys = extra_keys or {}
    if allow_name and isinstance(node, str):
        return {"type": node, "args": {}, **{key: spec.default for key, spec in extra_keys.items()}}
    if not isinstance(node, dict):
        errors.append(f'{path}: expected {{"type": NAME, "args": {{...}}}}, got {shown(node)}')
        return {"type": None, "args": {}}
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
    args = {} if node.get("args") is None else node["args"]
    if not isinstance(args, dict):
        errors.append(f"{path}.args: {shown(args)} is not valid; expected a mapping of arguments")
        args = {}
    extras = _check_keys({k: v for k, v in node.items() if k in extra_keys}, extra_keys,
                         f"{path}.", errors)  # fmt: skip
    return {"type": node.get("type"), "args": args, **extras}


def metric_name(node: dict) -> str:
    """The name a resolved `metrics` entry is logged under: its `name`, else its `type`."""
    return node.get("name") or node["type"]


def is_named_nodes(node: Any) -> bool:
    """Whether `node` is a mapping of names to nodes (several models), not one node."""
    return isinstance(node, dict) and bool(node) and not {"type", "args"} & set(node)


def node_path(config: dict, key: str, name: str) -> str:
    """The config path of one model's node under `key` (arch, optimizer, lr_scheduler):
    `optimizer`, or `optimizer.generator` when the key names its nodes."""
    return f"{key}.{name}" if is_named_nodes(config.get(key)) else key


def check_named_nodes(
    node: Any,
    path: str,
    errors: list[str],
    extra_keys: dict[str, Key] | None = None,
    optional: bool = False,
) -> dict:
    """`check_node` for a key that takes one node or a mapping of names to nodes (where
    `optional`, a name's node may be null: none for that model)."""
    if not is_named_nodes(node):
        return check_node(node, path, errors, extra_keys=extra_keys)
    return {
        name: None if child is None and optional
        else check_node(child, f"{path}.{name}", errors, extra_keys=extra_keys)
        for name, child in node.items()
    }  # fmt: skip


def _check_args(args: dict, keys: dict[str, Key], path: str, errors: list[str]) -> None:
    """Check the arguments in `args` that `keys` knows; the others are left to the builder,
    which compares them with the constructor's signature."""
    for key, spec in keys.items():
        if key in args:
            _check_value(args[key], spec, f"{path}.args.{key}", errors)


def resolve_config(
    config: dict, trainer_keys: Callable[[str], dict[str, Key]] | None = None
) -> dict:
    """The config with every default written out, or every problem in one `UserError`.
    `trainer_keys(trainer_type)`: the chosen trainer class's keys beyond `TRAINER_KEYS`."""
    problems = data_problems(config)  # no check below could make sense of a cycle or a date
    if problems:
        raise UserError(one_line(problems))
    errors: list[str] = []
    resolved = _check_keys(config, TOP_LEVEL_KEYS, "", errors)
    _check_nodes(resolved, errors)
    resolved["trainer"] = _check_trainer(resolved["trainer"] or {}, trainer_keys, errors)
    resolved["test"] = _check_keys(resolved["test"], TEST_KEYS, "test.", errors)
    _check_args(resolved["data_loader"]["args"], LOADER_ARGS, "data_loader", errors)
    for index, node in enumerate(resolved["metrics"]):
        if isinstance(node["type"], str):
            _check_args(node["args"], METRIC_ARGS.get(node["type"], {}), f"metrics[{index}]",
                        errors)  # fmt: skip
    if errors:
        raise UserError(one_line(errors))
    return resolved


def _check_nodes(resolved: dict, errors: list[str]) -> None:
    """Replace each `{"type": ..., "args": ...}` node of the top level by its checked form."""
    resolved["arch"] = check_named_nodes(resolved["arch"], "arch", errors)
    resolved["optimizer"] = check_named_nodes(
        resolved["optimizer"], "optimizer", errors, extra_keys=OPTIMIZER_KEYS
    )
    resolved["data_loader"] = check_node(resolved["data_loader"], "data_loader", errors)
    if resolved["loss"] is not None:
        resolved["loss"] = check_node(resolved["loss"], "loss", errors, allow_name=True)
    if resolved["lr_scheduler"] is not None:
        resolved["lr_scheduler"] = check_named_nodes(
            resolved["lr_scheduler"], "lr_scheduler", errors, SCHEDULER_KEYS, optional=True
        )
    resolved["metrics"] = [
        check_node(m, f"metrics[{i}]", errors, allow_name=True, extra_keys=METRIC_NODE_KEYS)
        for i, m in enumerate(resolved["metrics"] or [])
    ]


def _check_trainer(
    trainer: dict, trainer_keys: Callable[[str], dict[str, Key]] | None, errors: list[str]
) -> dict:
    """The `trainer` section checked against the shared keys and the chosen class's own."""
    keys = dict(TRAINER_KEYS)
    name = trainer.get("type", "Trainer")
    if trainer_keys is not None and isinstance(name, str):
        try:
            keys.update(trainer_keys(name))
        except UserError as error:
            errors.append(str(error))
    resolved = _check_keys(trainer, keys, "trainer.", errors)
    resolved["hooks"] = [
        check_node(node, f"trainer.hooks[{i}]", errors) for i, node in enumerate(resolved["hooks"])
    ]
    return resolved


def _leaves(config: dict) -> dict[str, Any]:
    return {path: value for path, value in walk(config) if not isinstance(value, dict | list)}


def config_changes(old: dict, new: dict) -> list[str]:
    """`key: old -> new` for every value that differs between two resolved configs."""
    before, after = _leaves(old), _leaves(new)
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
    return arch["type"] if "type" in arch else {name: node["type"] for name, node in arch.items()}
