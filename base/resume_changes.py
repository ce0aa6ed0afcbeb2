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

from base.base_trainer import BaseTrainer
from base.optimizer_argument_changes import ArgumentChange, apply_change, argument_changes
from base.resume_refusals import (
    changed_lengths,
    changed_optimizers,
    changed_order,
    changed_schedules,
    contradictions,
    one_cycle_lengths,
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
