"""The trainer class `trainer.type` names and the config keys that are its constructor's
arguments (the trainer keys beyond the shared ones, the loss and the metrics); a run's config
checked with those keys; and `build_trainer`: every part the config names, and the trainer
around them."""

import inspect
import math
import typing
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import trainer
from base import BaseTrainer, EpochLoader, Hook
from builder.hooks import BUILT_IN, build_hooks
from builder.optimizers import build_lr_schedulers, build_optimizers
from builder.parts import build_data_loader, build_loss, build_metrics, build_models
from builder.report import reports_to_try
from utils.checkpoint.fields import check_config
from utils.config.argument_types import fits, hint_name
from utils.config.build import is_subclass_of, lookup_in_package
from utils.config.check import load_run_config
from utils.config.keys import Key
from utils.errors import UserError

SHARED_ARGUMENTS = set(inspect.signature(BaseTrainer.__init__).parameters) | {
    "self", "args", "kwargs", "criterion", "metric_fns",
}  # fmt: skip
# Trainer keys that are not the trainer's constructor arguments: the built-in hooks' (see
# builder/hooks.py), the run directory's and the console's, and the choice of trainer and hooks.
NOT_TRAINER_ARGUMENTS = {"save_dir", "save_period", "keep_last", "save_every_steps",
                         "early_stop", "tensorboard", "log_images", "metrics_csv", "progress_bar",
                         "verbosity", "type", "hooks"}  # fmt: skip


def trainer_class(name: str) -> type[BaseTrainer]:
    return lookup_in_package("trainer", name, trainer, is_subclass_of(BaseTrainer))


def accepted_arguments(cls: type) -> dict[str, inspect.Parameter]:
    """The named constructor arguments of `cls`, following `**kwargs` up to its bases."""
    accepted: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters
        for name, parameter in parameters.items():
            if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                accepted.setdefault(name, parameter)
        if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            break
    return accepted


def trainer_keys(name: str) -> dict[str, Key]:
    """The config keys a trainer class takes beyond the shared ones: its own arguments, each
    checked against its type hint (a default of None is taken too)."""
    cls, keys = trainer_class(name), {}
    for key, parameter in accepted_arguments(cls).items():
        if key not in SHARED_ARGUMENTS:
            default = None if parameter.default is parameter.empty else parameter.default
            hint = _type_hint(cls, key)
            hint = hint if default is not None or hint is Any else hint | None
            keys[key] = Key(hint, default, f"{hint_name(hint)} ({cls.__name__}'s {key})")
    return keys


def _type_hint(cls: type, name: str) -> Any:
    """The type hint of the constructor argument `name` where a class of `cls`'s takes it
    (Any where it has none, or one that cannot be resolved or checked)."""
    for klass in cls.__mro__:  # (the class whose argument it is, as `accepted_arguments` finds)
        if "__init__" in vars(klass) and name in inspect.signature(klass.__init__).parameters:
            try:  # (a name imported only for type checkers; a type pydantic cannot check)
                hint = typing.get_type_hints(klass.__init__, include_extras=True).get(name, Any)
                fits(hint, None)
            except Exception:
                return Any
            return hint
    return Any


def run_config(
    config_file: str | Path | None,
    overrides: Iterable[str],
    checkpoint: dict | None = None,
    checkpoint_path: str | Path | None = None,
) -> dict:
    """The config of a run (train.py, test.py, a tune.py trial): `config_file`, else the
    checkpoint's own (whose problems then name the checkpoint), with `overrides` applied and
    checked, the trainer keys included."""
    if checkpoint is not None and config_file is None:
        check_config(checkpoint_path, checkpoint, trainer_keys)
    return load_run_config(config_file, checkpoint, overrides, trainer_keys)


def trainer_options(config: dict) -> dict[str, Any]:
    """The trainer keys that are the trainer's own constructor arguments (not a hook's)."""
    return {
        key: value for key, value in config["trainer"].items() if key not in NOT_TRAINER_ARGUMENTS
    }


def runtime_arguments(
    trainer_type: type[BaseTrainer], criterion: Callable | None, metric_fns: dict
) -> dict[str, Any]:
    """The loss (`criterion`) and metrics (`metric_fns`) for a trainer that takes them; a
    trainer that does not take one refuses a config that names it."""
    parameters = accepted_arguments(trainer_type)
    arguments = {}
    for name, value, key in (
        ("criterion", criterion, "loss"),
        ("metric_fns", metric_fns, "metrics"),
    ):
        if name in parameters:
            arguments[name] = value
        elif value:
            raise UserError(f"{key}: {trainer_type.__name__} takes no {key}; remove it")
    if "criterion" in parameters and criterion is None:
        raise UserError(f"loss: missing; {trainer_type.__name__} needs a loss")
    return arguments


def check_model_names(trainer_type: type[BaseTrainer], built_models: dict, skip: bool) -> None:
    """The models the trainer trains are the config's; `skip` (`on_nonfinite: "skip"`) drops
    a whole update, which only one optimizer can (of several, one steps before the next's
    loss is seen, so a dropped update would be half made)."""
    expected = list(trainer_type.model_names)
    if sorted(built_models) != sorted(expected):
        given = "one model" if list(built_models) == ["model"] else sorted(built_models)
        raise UserError(
            f"arch: {trainer_type.__name__} trains the models {expected}, but the config names "
            f"{given}; give arch a node for each of them"
        )
    if skip and len(expected) > 1:
        raise UserError(f"trainer.on_nonfinite: 'skip' drops a whole update, but "
                        f"{trainer_type.__name__}'s optimizers step in turn, one before the "
                        "next one's loss is known; use 'stop' or null")  # fmt: skip


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
    models = _trainers_models(errors, config, trainer_type, weights_from_checkpoint or evaluation)
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


def _trainers_models(
    errors: list[str], config: dict, trainer_type: type[BaseTrainer] | None, from_checkpoint: bool
) -> dict[str, Any]:
    """The models, if they build and are the ones the trainer trains; else the trainer's model
    names, each to None (stand-ins of them let the optimizers and schedulers be checked)."""
    models = _attempt(errors, build_models, config, from_checkpoint)
    if models is not None and trainer_type is not None:
        skip, found = config["trainer"]["on_nonfinite"] == "skip", len(errors)
        _attempt(errors, check_model_names, trainer_type, models, skip)
        models = models if len(errors) == found else None
    return models or dict.fromkeys(trainer_type.model_names if trainer_type else ["model"])


def _build_optimization(
    errors: list[str], config: dict, models: dict, data_loader: EpochLoader | None
) -> tuple[dict | None, dict, dict]:
    """The optimizers, the LR schedulers and the interval each one steps at. Where the models
    (a mapping of names to None) or the loader failed, stand-ins of the trainer's models still
    let the arguments of these be checked."""
    built = None not in models.values()
    stand_in = {name: nn.Linear(1, 1) for name in models}
    optimizers = _attempt(errors, build_optimizers, config, models if built else stand_in, built)
    options = config["trainer"]
    n_steps = 1  # optimizer steps per epoch; the loader's length, where it was built
    if data_loader is not None:
        n_steps = options["len_epoch"] or math.ceil(len(data_loader) / options["accumulate_steps"])
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
