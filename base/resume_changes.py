"""Resuming with a changed optimizer or schedule: apply what the restored state can take,
refuse what it contradicts.

A plain resume (`-r` without `-c`) restores the optimizers and LR schedulers from the
checkpoint, and their state would silently override changed config values. So:

- a changed `optimizer.args` value (a parameter-group hyperparameter: `lr`, `weight_decay`,
  `betas`, ...) is set in every restored parameter group that does not set its own
  (`optimizer.param_groups`). A changed `lr` is the new *base* learning rate: those groups'
  current `lr` and `initial_lr` and the schedule's `base_lrs` are all scaled by new/old, so
  the schedule goes on from the point it reached, at the new base;
- a changed `optimizer.type`, `optimizer.param_groups` or `lr_scheduler`, a changed
  one-cycle length, or an argument the restored state cannot follow is refused: that state
  belongs to what the checkpoint ran. So are a changed `seed`, and a changed data loader
  in the middle of an epoch: the restored position in the epoch's sample order would no
  longer be where the run stood.
  Fine-tuning (`-c CONFIG -r CHECKPOINT`) starts a new run from the weights instead.
"""

import logging
from typing import Any

import torch
from torch.optim.lr_scheduler import CyclicLR, OneCycleLR

from base.base_trainer import BaseTrainer
from base.optimizer_argument_changes import (
    ArgumentChange,
    apply_change,
    argument_changes,
    config_node,
    optimizer_arguments,
    schedulers_in,
)
from utils.config.check import config_changes
from utils.errors import UserError


def resume_with_changes(trainer: BaseTrainer, checkpoint: dict) -> dict[str, str]:
    """`trainer.load_state_dict(checkpoint)`, with the changed optimizer arguments applied to
    the restored optimizers. Returns a log line for each applied config key, by key. A change
    the restored state contradicts is a `UserError`, raised before anything is written."""
    old, new = checkpoint["config"], trainer.config
    _refuse(
        changed_optimizers(trainer, old, new)
        + changed_schedules(trainer, old, new)
        + changed_order(checkpoint, old, new)
    )
    lengths = {name: one_cycle_lengths(s.state_dict()) for name, s in trainer.lr_schedulers.items()}
    trainer.load_state_dict(checkpoint)
    _refuse(changed_lengths(trainer, lengths, old, new))
    changes = argument_changes(trainer, old, new)
    _refuse(contradictions(trainer, changes, new))
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


def resume_change_lines(old: dict, new: dict, applied: dict[str, str]) -> list[tuple[int, str]]:
    """The log lines (level, message) of a resumed run's config changes: each applied one
    (info), then each other one (warning: in force, but not checked against the state)."""
    lines = [(logging.INFO, f"config changed on resume: {line}") for line in applied.values()]
    for change in config_changes(old, new):
        key = change.partition(": ")[0]
        if not any(key == k or key.startswith((f"{k}[", f"{k}.")) for k in applied):
            # More epochs is the routine change; the others are in force unchecked.
            level = logging.INFO if key == "trainer.epochs" else logging.WARNING
            lines.append((level, f"config changed on resume: {change}"))
    return lines


def _refuse(errors: list[str]) -> None:
    if errors:
        raise UserError(" | ".join(dict.fromkeys(errors)))


# The changes the restored state contradicts, each with why and what to do instead.


def _fine_tune(goal: str = "change it") -> str:
    """The way to make a change the restored state cannot take."""
    return (
        f"to {goal}, fine-tune: python train.py -c CONFIG -r CHECKPOINT starts a new run from "
        "the weights only (CONFIG may be this run's config.json)"
    )


def changed_order(checkpoint: dict, old: dict, new: dict) -> list[str]:
    """A changed `seed` (it orders every epoch's samples), or data loader in the middle of an
    epoch (its batches done were counted in the old loader's batches): the resumed run would
    silently train other samples than the ones it skips."""
    errors = []
    done, epoch = checkpoint["batches_done"], checkpoint["epoch"] + 1
    for change in config_changes(old, new):
        if change.startswith("seed:"):
            errors.append(f"{change} on resume: the run's sample order comes from its seed; "
                          f"{_fine_tune('train with another seed')}")  # fmt: skip
        elif change.startswith("data_loader.") and done > 0:
            batches = f"{done} batch{'es' if done > 1 else ''}"
            errors.append(f"{change} on resume {batches} into epoch {epoch}, which counted "
                          "the old loader's batches; change it when resuming from an epoch "
                          "checkpoint")  # fmt: skip
    return errors


def changed_optimizers(trainer: BaseTrainer, old: dict, new: dict) -> list[str]:
    """A changed `optimizer.type`: the restored state (Adam's moments, ...) is the old type's.
    A changed `optimizer.param_groups`: the restored state numbers its parameters by the old
    groups, and each group's hyperparameters (and schedule) are the old ones."""
    errors = []
    for name in trainer.optimizers:
        path, node = config_node(new, "optimizer", name)
        was = config_node(old, "optimizer", name)[1]
        if node["type"] != was["type"]:
            errors.append(
                f"{path}.type: {was['type']!r} -> {node['type']!r} on resume: the restored "
                f"optimizer state is {was['type']}'s; {_fine_tune('switch optimizer')}"
            )
        if node["param_groups"] != was["param_groups"]:
            key = f"{path}.param_groups"
            changes = "; ".join(
                config_changes({key: was["param_groups"]}, {key: node["param_groups"]})
            )
            errors.append(
                f"{changes or key + ': reordered'} on resume: the restored optimizer state "
                f"is in the old parameter groups, with their options; {_fine_tune()}"
            )
    return errors


def changed_schedules(trainer: BaseTrainer, old: dict, new: dict) -> list[str]:
    """A changed `lr_scheduler` (added, removed, other type, args or interval): loading the
    restored schedule's state would override most of it, and a new one would not know where
    the run stands."""
    errors = []
    for name in trainer.optimizers:
        path, node = config_node(new, "lr_scheduler", name)
        was = config_node(old, "lr_scheduler", name)[1]
        if node != was:
            if was is None or node is None:
                changes = f"{path}: {'added' if was is None else 'removed'}"
            else:
                changes = "; ".join(config_changes({path: was}, {path: node}))
            errors.append(
                f"{changes} on resume: the restored schedule cannot take a changed "
                f"lr_scheduler; {_fine_tune()}"
            )
    return errors


def one_cycle_lengths(state: dict) -> list[int]:
    """The `total_steps` of a scheduler's state (OneCycleLR's) and of those nested in it."""
    own = [state["total_steps"]] if "total_steps" in state else []
    return own + [n for child in state.get("_schedulers", []) for n in one_cycle_lengths(child)]


def changed_lengths(
    trainer: BaseTrainer, lengths: dict[str, list[int]], old: dict, new: dict
) -> list[str]:
    """A one-cycle schedule without `total_steps` of its own lasts `trainer.epochs` x the
    optimizer steps per epoch, fixed when it starts: a resumed run cannot change that."""
    errors = []
    for name, scheduler in trainer.lr_schedulers.items():
        restored = one_cycle_lengths(scheduler.state_dict())
        if restored == lengths[name]:
            continue
        path = config_node(new, "lr_scheduler", name)[0]
        before, after = (", ".join(map(str, steps)) for steps in (restored, lengths[name]))
        epochs = old["trainer"]["epochs"], new["trainer"]["epochs"]
        cause = (
            f"trainer.epochs: {epochs[0]} -> {epochs[1]}"
            if epochs[0] != epochs[1]
            else f"{path}: the optimizer steps per epoch changed, which"
        )
        errors.append(
            f"{cause} would change the length of the restored one-cycle schedule ({path}: "
            f"total_steps {before} -> {after}, trainer.epochs x "
            f"optimizer steps per epoch), which is fixed when it starts; "
            f"{_fine_tune('train with a new cycle')}"
        )
    return errors


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
                f"{_fine_tune('change the schedule')}"
            )
        elif change.argument == "lr" and change.old == 0 and schedulers:
            errors.append(
                f"{change.key}: the restored run trained with lr 0, so the point its schedule "
                f"reached cannot be carried over to lr {change.new!r}; {_fine_tune()}"
            )
    for name in dict.fromkeys(change.name for change in changes):
        optimizer = trainer.optimizers[name]
        missing = _missing_state(optimizer, optimizer_arguments(new, name))
        if missing:
            keys = ", ".join(f"{c.key}: {c.old!r} -> {c.new!r}" for c in changes if c.name == name)
            errors.append(
                f"{keys} needs optimizer state the restored {type(optimizer).__name__} does "
                f"not have ({', '.join(missing)}); {_fine_tune()}"
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
