"""`build_trainer`: every part the config names, and the trainer around them."""

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from base import BaseTrainer, EpochLoader, Hook
from builder.hooks import BUILT_IN, build_hooks
from builder.optimizers import build_lr_schedulers, build_optimizers
from builder.parts import build_data_loader, build_loss, build_metrics, build_models
from builder.report import reports_to_try
from builder.trainer_type import (
    check_model_names,
    runtime_arguments,
    trainer_class,
    trainer_options,
)
from utils.errors import UserError


def steps_per_epoch(config: dict, loader: EpochLoader) -> int:
    options = config["trainer"]
    return options["len_epoch"] or math.ceil(len(loader) / options["accumulate_steps"])


def build_trainer(
    config: dict,
    device: torch.device,
    device_ids: Iterable[int] = (),
    data_loader: EpochLoader | None = None,
    valid_data_loader: Any = None,
    evaluation: bool = False,
    extra_hooks: Sequence[Hook] = (),
    weights_from_checkpoint: bool = False,
) -> BaseTrainer:
    """Build every part the config names and the trainer around them. A problem in one part
    does not hide the others: all of them are reported together (one line, ` | ` between).

    With `evaluation` (test.py), `data_loader` is the test split and the trainer gets only
    the user's hooks (an EMA hook evaluates its weights; nothing writes). `extra_hooks`
    (those of the program running the trainer, such as tune.py's reporter) come last, so
    they see each epoch after it is saved and logged. With `weights_from_checkpoint` (resume,
    fine-tuning a checkpoint; always with `evaluation`), models skip their own initial weights.
    """
    errors: list[str] = []

    def attempt(build: Callable, *args: Any) -> Any:
        try:
            return build(*args)
        except UserError as error:
            errors.append(str(error))
            return None

    if data_loader is None:
        data_loader = attempt(build_data_loader, config, device)
        valid_data_loader = data_loader and data_loader.split_validation()
    trainer_type = attempt(trainer_class, config["trainer"]["type"])
    if trainer_type is not None:  # test.report: a typo fails now, not after training
        attempt(reports_to_try, config, trainer_type)
    built_models = attempt(build_models, config, weights_from_checkpoint or evaluation)
    criterion, metric_fns = attempt(build_loss, config), attempt(build_metrics, config)
    # Where a part failed, a stand-in still lets the arguments of the next ones be checked.
    stand_in = {name: nn.Linear(1, 1) for name in built_models or ["model"]}
    optimizers = attempt(build_optimizers, config, built_models or stand_in, bool(built_models))
    n_steps = steps_per_epoch(config, data_loader) if data_loader is not None else 1
    stand_in_optimizers = {n: torch.optim.SGD(m.parameters(), lr=0.1) for n, m in stand_in.items()}
    built = attempt(build_lr_schedulers, config, optimizers or stand_in_optimizers, n_steps)
    lr_schedulers, intervals = built or ({}, {})
    hook_list = attempt(build_hooks, config, intervals, evaluation)
    if errors:
        raise UserError(" | ".join(errors))
    options = trainer_options(config)
    if evaluation:  # (a built-in hook listed in trainer.hooks is dropped too)
        hook_list = [hook for hook in hook_list if not isinstance(hook, BUILT_IN)]
        options["monitor"] = "off"  # nothing is monitored without training
        options["strategy"] = None  # one process evaluates the full weights
    hook_list = [*hook_list, *extra_hooks]
    options.update(runtime_arguments(trainer_type, criterion, metric_fns))
    check_model_names(trainer_type, built_models)
    return trainer_type(
        built_models, optimizers, data_loader, device=device, config=config,
        valid_data_loader=valid_data_loader, lr_schedulers=lr_schedulers, hooks=hook_list,
        device_ids=list(device_ids), **options,
    )  # fmt: skip
