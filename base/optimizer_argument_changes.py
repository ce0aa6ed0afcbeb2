"""A changed `optimizer.args` value on resume (the resume_changes unit): set in each restored
optimizer's parameter groups that do not set it themselves and, for `lr`, in its schedule, so
that the schedule goes on from the point it reached at the new base; unless the restored state
contradicts it (base/resume_changes.py finds the changes and refuses the rest)."""

from typing import Any

import torch
from torch.optim.lr_scheduler import CyclicLR, OneCycleLR

from base.base_trainer import BaseTrainer
from base.resume_changes import (
    ArgumentChange,
    config_node,
    fine_tune,
    optimizer_arguments,
    refuse,
)


def apply_changes(trainer: BaseTrainer, changes: list[ArgumentChange]) -> dict[str, str]:
    """Apply `changes` to the restored optimizers, or refuse them all if the restored state
    contradicts one; a log line for each config key, by key."""
    refuse(contradictions(trainer, changes, trainer.config))
    by_key: dict[str, list[ArgumentChange]] = {}
    for change in changes:  # one key for several optimizers where they share one node
        by_key.setdefault(change.key, []).append(change)
    lines = {}
    for key, same in by_key.items():
        who = "{}: " if len(trainer.optimizers) > 1 else ""
        details = [who.format(change.name) + apply_change(trainer, change) for change in same]
        lines[key] = (
            f"{key}: {same[0].old!r} -> {same[0].new!r}, applied to the restored "
            f"optimizer{'s' if len(same) > 1 else ''} ({'; '.join(details)})"
        )
    return lines


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


def contradictions(trainer: BaseTrainer, changes: list[ArgumentChange], new: dict) -> list[str]:
    """Why the restored state cannot follow some of `changes`, if it cannot."""
    errors = []
    for change in changes:
        schedulers = schedulers_in(trainer.lr_schedulers.get(change.name))
        owners = [type(s).__name__ for s in schedulers if change.argument in _cycled(s)]
        if owners:
            errors.append(
                f"{change.key}: {owners[0]} sets {change.argument} itself, from its own "
                f"arguments, so {change.key} has no effect with it; "
                f"{fine_tune('change the schedule')}"
            )
        elif change.argument == "lr" and change.old == 0 and schedulers:
            errors.append(
                f"{change.key}: the restored run trained with lr 0, so the point its schedule "
                f"reached cannot be carried over to lr {change.new!r}; {fine_tune()}"
            )
    for name in dict.fromkeys(change.name for change in changes):
        optimizer = trainer.optimizers[name]
        missing = _missing_state(optimizer, optimizer_arguments(new, name))
        if missing:
            keys = ", ".join(f"{c.key}: {c.old!r} -> {c.new!r}" for c in changes if c.name == name)
            errors.append(
                f"{keys} needs optimizer state the restored {type(optimizer).__name__} does "
                f"not have ({', '.join(missing)}); {fine_tune()}"
            )
    return errors


def _cycled(scheduler: Any) -> set[str]:
    """The optimizer arguments a cyclic schedule sets at every step, overriding the config:
    the lr, and with `cycle_momentum` the momentum (SGD's `momentum`, Adam's `betas[0]`)."""
    if not isinstance(scheduler, OneCycleLR | CyclicLR):
        return set()
    return {"lr", "momentum", "betas"} if scheduler.cycle_momentum else {"lr"}


def _missing_state(optimizer: torch.optim.Optimizer, arguments: dict) -> list[str]:
    """The per-parameter state that `optimizer`'s type keeps under `arguments` and its
    restored state lacks (Adam's `max_exp_avg_sq` once `amsgrad` is on): one step of a new
    optimizer of that type, on a stand-in for a restored parameter, shows what it keeps."""
    restored = [(parameter, state) for parameter, state in optimizer.state.items() if state]
    if not restored:
        return []  # no step taken yet: the first one creates every entry it needs
    parameter, state = restored[0]
    stand_in = torch.zeros_like(parameter, requires_grad=True)
    stand_in.grad = torch.zeros_like(parameter)
    probe = type(optimizer)([stand_in], **arguments)
    probe.step()
    return sorted(set(probe.state[stand_in]) - set(state))
