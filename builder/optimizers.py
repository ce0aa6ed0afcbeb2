"""The optimizer of each model and the LR scheduler of each optimizer; `optimizer` and
`lr_scheduler` give one node for all models or a node per model's name."""

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler as schedulers

from utils.config.build import instantiate, is_subclass_of, lookup
from utils.config.check import check_node, is_named_nodes, node_path
from utils.errors import UserError
from utils.units import has_unit, missing_unit


def named(node: dict, names: Iterable[str], path: str) -> dict[str, dict]:
    """A node for each of `names`: a mapping's own nodes, or one node shared by all."""
    names = list(names)
    if not is_named_nodes(node):
        return dict.fromkeys(names, node)
    if set(node) != set(names):
        each = "a node (or null: no schedule) for each" if path == "lr_scheduler" else "one each"
        raise UserError(f"{path}: names {sorted(node)} do not match the models {names}; give "
                        f"{each}")  # fmt: skip
    return node


def build_optimizers(
    config: dict, built_models: dict[str, nn.Module], groups: bool = True
) -> dict[str, torch.optim.Optimizer]:
    """One optimizer per model with trainable parameters, in its node's `param_groups`;
    without `groups` (stand-in models, whose names are not the config's), in one group."""
    nodes = named(config["optimizer"], built_models, "optimizer")
    accept = is_subclass_of(torch.optim.Optimizer)
    optimizers = {}
    for name, node in nodes.items():
        model = built_models[name]
        parameters = [p for p in model.parameters() if p.requires_grad]
        if parameters:
            path = node_path(config, "optimizer", name)
            optimizer_class = lookup(path, node["type"], [torch.optim], accept)
            if groups and node.get("param_groups"):
                parameters = grouped(model, node, f"{path}.param_groups", optimizer_class)
            optimizers[name] = instantiate(path, optimizer_class, node["args"], parameters)
    if not optimizers:  # (`freeze: ["*"]`) a run that computes losses and changes nothing
        raise UserError(f"arch: every parameter of {', '.join(built_models)} is frozen, so "
                        "nothing would train; leave some trainable (`freeze`)")  # fmt: skip
    return optimizers


def grouped(model: nn.Module, node: dict, path: str, optimizer_class: type) -> list[dict]:
    """The model's parameters in the groups of `node["param_groups"]` (the transfer unit's
    utils/config/param_groups.py; without it, a one-line refusal)."""
    if not has_unit("utils.config.param_groups"):
        raise missing_unit(path, "utils/config/param_groups.py", "transfer",
                           "leave it [] (one group: the optimizer's args)")  # fmt: skip
    from utils.config.param_groups import build_param_groups

    return build_param_groups(model, node["param_groups"], path, optimizer_class, node["args"])


def build_lr_schedulers(
    config: dict, optimizers: dict[str, torch.optim.Optimizer], steps_per_epoch: int
) -> tuple[dict[str, Any], dict[str, str]]:
    """The LR scheduler of each optimizer (none where its node is null), and whether it steps
    per "epoch" or "step" (`OneCycleLR` by default per step, the others per epoch)."""
    node = config["lr_scheduler"]
    if node is None:
        return {}, {}
    built, intervals = {}, {}
    for name, child in named(node, optimizers, "lr_scheduler").items():
        if child is None:
            continue
        path = node_path(config, "lr_scheduler", name)
        interval = child.get("interval") or ("step" if child["type"] == "OneCycleLR" else "epoch")
        if interval == "step" and child["type"] == "ReduceLROnPlateau":
            raise UserError(
                f"{path}.interval: ReduceLROnPlateau steps on the monitored value, once per "
                "epoch; valid: 'epoch'"
            )
        n_steps = steps_per_epoch if interval == "step" else 1  # scheduler steps per epoch
        built[name] = build_lr_scheduler(child, path, optimizers[name], config, n_steps)
        intervals[name] = interval
    return built, intervals


def build_lr_scheduler(
    node: dict, path: str, optimizer: torch.optim.Optimizer, config: dict, n_steps: int
) -> Any:
    """One scheduler; arguments that are lists of nodes (`SequentialLR`'s and
    `ChainedScheduler`'s `schedulers`) are built too, on the same optimizer. `OneCycleLR`
    without a length gets the run's: `epochs` x `n_steps` (its steps per epoch)."""
    accept = is_subclass_of(schedulers.LRScheduler, schedulers.ReduceLROnPlateau)
    scheduler_class = lookup(path, node["type"], [schedulers], accept)
    args = dict(node["args"])
    for key, value in args.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            args[key] = [
                build_lr_scheduler(check_child(child, f"{path}.args.{key}[{i}]"),
                                   f"{path}.args.{key}[{i}]", optimizer, config, n_steps)
                for i, child in enumerate(value)
            ]  # fmt: skip
    one_cycle = scheduler_class is schedulers.OneCycleLR
    if one_cycle and "total_steps" not in args and "epochs" not in args:
        args["total_steps"] = config["trainer"]["epochs"] * n_steps
    return instantiate(path, scheduler_class, args, optimizer=optimizer)


def check_child(node: Any, path: str) -> dict:
    """A nested scheduler node, checked like a top-level one (`type` and `args` only)."""
    errors: list[str] = []
    checked = check_node(node, path, errors)
    if errors:
        raise UserError(" | ".join(errors))
    return checked
