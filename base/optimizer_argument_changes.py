"""A changed `optimizer.args` value on resume: found for each restored optimizer, and set in
its parameter groups and, for `lr`, in its schedule (resume_changes.py says when)."""

import inspect
from dataclasses import dataclass
from typing import Any

from base.base_trainer import BaseTrainer
from utils.config.check import check_named_nodes, node_path
from utils.config.keys import OPTIMIZER_KEYS, SCHEDULER_KEYS

_ABSENT = object()


@dataclass(frozen=True)
class ArgumentChange:
    """One changed `optimizer.args` value, for one restored optimizer."""

    key: str  # the config key, e.g. "optimizer.args.lr" or "optimizer.generator.args.lr"
    name: str  # the optimizer's (its model's) name
    argument: str
    old: Any  # what the checkpoint ran with (the constructor's default where not given)
    new: Any  # what this run gives it, as the optimizer's constructor stored it


def config_node(config: dict, key: str, name: str) -> tuple[str, dict | None]:
    """The config key path and node of `key` (optimizer, lr_scheduler) for one model's name,
    resolved as the config loader resolves it (so a default written out compares equal)."""
    node = config.get(key)
    if node is None:
        return key, None
    extra_keys = SCHEDULER_KEYS if key == "lr_scheduler" else OPTIMIZER_KEYS
    path = node_path(config, key, name)
    return path, check_named_nodes(node.get(name) if path != key else node, path, [], extra_keys)


def optimizer_arguments(config: dict, name: str) -> dict:
    return config_node(config, "optimizer", name)[1]["args"]


def argument_changes(trainer: BaseTrainer, old: dict, new: dict) -> list[ArgumentChange]:
    """Every `optimizer.args` value that differs from the checkpoint's, per optimizer."""
    changes = []
    for name, optimizer in trainer.optimizers.items():
        path = config_node(new, "optimizer", name)[0]
        was, now = optimizer_arguments(old, name), optimizer_arguments(new, name)
        for argument in sorted(was.keys() | now.keys()):
            if was.get(argument, _ABSENT) == now.get(argument, _ABSENT):
                continue
            default = inspect.signature(type(optimizer)).parameters[argument].default
            before, after = was.get(argument, default), optimizer.defaults[argument]
            if before != after:  # (not a value written out that was the default)
                changes.append(
                    ArgumentChange(f"{path}.args.{argument}", name, argument, before, after)
                )
    return changes


def apply_change(trainer: BaseTrainer, change: ArgumentChange) -> str:
    """Set `change` in the restored optimizer's groups that do not set that argument
    themselves (and, for `lr`, in their schedule); say what changed."""
    optimizer = trainer.optimizers[change.name]
    taking = [change.argument not in own for own in _own_options(trainer, change.name)]
    kept = [str(index) for index, takes in enumerate(taking) if not takes]
    where = f" (group {', '.join(kept)} keeps its own)" if kept else ""
    if not any(taking):
        return f"no parameter group: each sets its own {change.argument}"
    if change.argument != "lr":
        for group, takes in zip(optimizer.param_groups, taking, strict=True):
            if takes:
                group[change.argument] = change.new
        return f"every parameter group{where}"
    first = taking.index(True)
    before = optimizer.param_groups[first]["lr"]

    def rescale(lr: float) -> float:
        if change.old == 0:  # no schedule (`contradictions` refuses one): nothing to carry over
            return change.new
        return change.new * (lr / change.old)  # exactly `new` where lr is the old base

    for group, takes in zip(optimizer.param_groups, taking, strict=True):
        for key in ("lr", "initial_lr"):
            if key in group and takes:
                group[key] = rescale(group[key])
    schedulers = schedulers_in(trainer.lr_schedulers.get(change.name))
    for scheduler in schedulers:
        for attribute in ("base_lrs", "_last_lr"):
            if hasattr(scheduler, attribute):
                rates = zip(getattr(scheduler, attribute), taking, strict=True)
                setattr(scheduler, attribute, [rescale(lr) if t else lr for lr, t in rates])
    after = optimizer.param_groups[first]["lr"]
    rule = ", the schedule going on from where it stood" if schedulers else ""
    group = f"group {first}'s " if len(taking) > 1 else ""
    return f"new base lr: {group}current lr {before:.6g} -> {after:.6g}{rule}{where}"


def _own_options(trainer: BaseTrainer, name: str) -> list[set[str]]:
    """The options each of an optimizer's parameter groups sets itself, by group number (the
    groups are rebuilt from the config and the model as when the optimizer was built)."""
    path, node = config_node(trainer.config, "optimizer", name)
    if not node["param_groups"]:
        return [set()]  # one group: the optimizer's args alone
    from utils.config.param_groups import group_parameters  # (the transfer unit's)

    groups = group_parameters(
        trainer.bare_models[name], node["param_groups"], f"{path}.param_groups"
    )
    return [set(group.options) for group in groups]


def schedulers_in(scheduler: Any) -> list[Any]:
    """A scheduler and those nested in it (SequentialLR's, ChainedScheduler's)."""
    if scheduler is None:
        return []
    return [scheduler, *(s for child in getattr(scheduler, "_schedulers", []) for s in
                         schedulers_in(child))]  # fmt: skip
