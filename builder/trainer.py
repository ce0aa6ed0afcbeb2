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
    """Build every part the config names and the trainer around them. With `evaluation`
    (test.py), `data_loader` is the test split. `extra_hooks` (those of the program running
    the trainer, such as tune.py's reporter) come last, so they see each epoch after it is
    saved and logged. With `weights_from_checkpoint` (resume, fine-tuning a checkpoint;
    always with `evaluation`), models skip their own initial weights."""
    errors: list[str] = []
    if data_loader is None:
        data_loader = _attempt(errors, build_data_loader, config, device)
        valid_data_loader = data_loader and data_loader.split_validation()
    trainer_type = _attempt(errors, trainer_class, config["trainer"]["type"])
    if trainer_type is not None:  # test.report: a typo fails now, not after training
        _attempt(errors, reports_to_try, config, trainer_type)
    models = _attempt(errors, build_models, config, weights_from_checkpoint or evaluation)
    criterion = _attempt(errors, build_loss, config)
    metric_fns = _attempt(errors, build_metrics, config)
    optimizers, lr_schedulers, intervals = _build_optimization(errors, config, models, data_loader)
    hooks = _attempt(errors, build_hooks, config, intervals, evaluation)
    if errors:  # every part's problem, in one line
        raise UserError(" | ".join(errors))
    options = trainer_options(config)
    if evaluation:
        hooks = _for_evaluation(hooks, options)
    options.update(runtime_arguments(trainer_type, criterion, metric_fns))
    check_model_names(trainer_type, models)
    return trainer_type(
        models, optimizers, data_loader, device=device, config=config,
        valid_data_loader=valid_data_loader, lr_schedulers=lr_schedulers,
        hooks=[*hooks, *extra_hooks], device_ids=list(device_ids), **options,
    )  # fmt: skip


def _attempt(errors: list[str], build: Callable, *args: Any) -> Any:
    """`build(*args)`, or None with its one-line error added to `errors`: a problem in one
    part does not hide the others, which are all reported together (` | ` between)."""
    try:
        return build(*args)
    except UserError as error:
        errors.append(str(error))
        return None


def _build_optimization(
    errors: list[str], config: dict, models: dict | None, data_loader: EpochLoader | None
) -> tuple[dict | None, dict, dict]:
    """The optimizers, the LR schedulers and the interval each one steps at. Where the models
    or the loader failed, a stand-in still lets the arguments of these be checked."""
    stand_in = {name: nn.Linear(1, 1) for name in models or ["model"]}
    optimizers = _attempt(errors, build_optimizers, config, models or stand_in, bool(models))
    n_steps = steps_per_epoch(config, data_loader) if data_loader is not None else 1
    stand_in_optimizers = {n: torch.optim.SGD(m.parameters(), lr=0.1) for n, m in stand_in.items()}
    built = _attempt(
        errors, build_lr_schedulers, config, optimizers or stand_in_optimizers, n_steps
    )
    lr_schedulers, intervals = built or ({}, {})
    return optimizers, lr_schedulers, intervals


def _for_evaluation(hooks: list[Hook], options: dict[str, Any]) -> list[Hook]:
    """test.py's trainer gets only the user's hooks (an EMA hook evaluates its weights;
    nothing writes: a built-in hook listed in trainer.hooks is dropped too), monitors
    nothing (nothing trains) and runs in one process, on the full weights."""
    options["monitor"] = "off"
    options["strategy"] = None
    return [hook for hook in hooks if not isinstance(hook, BUILT_IN)]
