"""Resuming with a changed config: what the restored state can take, and what it contradicts.

A plain resume (`-r` without `-c`) restores the optimizers and LR schedulers from the
checkpoint, and their state would silently override changed config values. So:

- a changed `optimizer.type`, `optimizer.param_groups` or `lr_scheduler`, or a changed
  one-cycle length is refused: that state belongs to what the checkpoint ran. So are a
  changed `seed`, and a changed data loader in the middle of an epoch: the restored position
  in the epoch's sample order would no longer be where the run stood;
- a changed `optimizer.args` value (`lr`, `weight_decay`, `betas`, ...) is applied to the
  restored optimizers by the resume_changes unit (base/optimizer_argument_changes.py), and
  refused without it.

Fine-tuning (`-c CONFIG -r CHECKPOINT`) starts a new run from the weights instead.
"""

import inspect
import logging
from dataclasses import dataclass
from typing import Any

from base.base_trainer import BaseTrainer
from utils.config.check import check_named_nodes, config_changes, node_path
from utils.config.keys import OPTIMIZER_KEYS, SCHEDULER_KEYS
from utils.errors import UserError
from utils.units import has_unit, missing_unit

_ABSENT = object()


@dataclass(frozen=True)
class ArgumentChange:
    """One changed `optimizer.args` value, for one restored optimizer."""

    key: str  # the config key, e.g. "optimizer.args.lr" or "optimizer.generator.args.lr"
    name: str  # the optimizer's (its model's) name
    argument: str
    old: Any  # what the checkpoint ran with (the constructor's default where not given)
    new: Any  # what this run gives it, as the optimizer's constructor stored it


def resume_with_changes(trainer: BaseTrainer, checkpoint: dict) -> dict[str, str]:
    """`trainer.load_state_dict(checkpoint)`, with the changed optimizer arguments applied to
    the restored optimizers. Returns a log line for each applied config key, by key. A change
    the restored state contradicts is a `UserError`, raised before anything is written."""
    old, new = checkpoint["config"], trainer.config
    refuse(
        changed_optimizers(trainer, old, new)
        + changed_schedules(trainer, old, new)
        + changed_order(checkpoint, old, new)
    )
    lengths = {name: one_cycle_lengths(s.state_dict()) for name, s in trainer.lr_schedulers.items()}
    trainer.load_state_dict(checkpoint)
    refuse(changed_lengths(trainer, lengths, old, new))
    changes = argument_changes(trainer, old, new)
    if not changes:
        return {}
    if not has_unit("base.optimizer_argument_changes"):
        where = "base/optimizer_argument_changes.py"
        refuse([str(missing_unit(f"{c.key}: {c.old!r} -> {c.new!r} on resume", where,
                                 "resume_changes", fine_tune())) for c in changes])  # fmt: skip
    from base.optimizer_argument_changes import apply_changes  # (the resume_changes unit's)

    return apply_changes(trainer, changes)


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


def refuse(errors: list[str]) -> None:
    if errors:
        raise UserError(" | ".join(dict.fromkeys(errors)))


def fine_tune(goal: str = "change it") -> str:
    """The way to make a change the restored state cannot take."""
    return (
        f"to {goal}, fine-tune: python train.py -c CONFIG -r CHECKPOINT starts a new run from "
        "the weights only (CONFIG may be this run's config.json)"
    )


def config_node(config: dict, key: str, name: str) -> tuple[str, dict | None]:
    """The config key path and node of `key` (optimizer, lr_scheduler) for one model's name,
    resolved as the config loader resolves it (so a default written out compares equal)."""
    node, path = config.get(key), node_path(config, key, name)
    node = node.get(name) if path != key else node  # (None: no node, or none for this model)
    extra_keys = SCHEDULER_KEYS if key == "lr_scheduler" else OPTIMIZER_KEYS
    return path, None if node is None else check_named_nodes(node, path, [], extra_keys)


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


# The changes the restored state contradicts, each with why and what to do instead.


def changed_order(checkpoint: dict, old: dict, new: dict) -> list[str]:
    """A changed `seed` (it orders every epoch's samples), or data loader in the middle of an
    epoch (its batches done were counted in the old loader's batches): the resumed run would
    silently train other samples than the ones it skips. Nor may the epoch's length
    (`len_epoch`) or its groups of batches (`accumulate_steps`) change there: the first
    resumed group would not be a whole one."""
    errors = []
    done, epoch = checkpoint["batches_done"], checkpoint["epoch"] + 1
    for change in config_changes(old, new):
        if change.startswith("seed:"):
            errors.append(f"{change} on resume: the run's sample order comes from its seed; "
                          f"{fine_tune('train with another seed')}")  # fmt: skip
        elif change.startswith(("trainer.accumulate_steps:", "trainer.len_epoch:")) and done:
            errors.append(f"{change} on resume {done} batches into epoch {epoch}, which were "
                          "counted in the old groups and epoch; change it when resuming from "
                          "an epoch checkpoint")  # fmt: skip
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
                f"optimizer state is {was['type']}'s; {fine_tune('switch optimizer')}"
            )
        if node["param_groups"] != was["param_groups"]:
            key = f"{path}.param_groups"
            changes = "; ".join(
                config_changes({key: was["param_groups"]}, {key: node["param_groups"]})
            )
            errors.append(
                f"{changes or key + ': reordered'} on resume: the restored optimizer state "
                f"is in the old parameter groups, with their options; {fine_tune()}"
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
                f"lr_scheduler; {fine_tune()}"
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
            f"{fine_tune('train with a new cycle')}"
        )
    return errors
