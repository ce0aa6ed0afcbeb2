"""The trainer class `trainer.type` names, and which config keys are its constructor's
arguments: the trainer keys beyond the shared ones, the loss and the metrics; and a run's
config, checked with those keys."""

import inspect
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import trainer
from base import BaseTrainer
from utils.checkpoint.fields import check_config
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
    """The config keys a trainer class takes beyond the shared ones: its own arguments."""
    return {
        name: Key(Any, None if p.default is p.empty else p.default)
        for name, p in accepted_arguments(trainer_class(name)).items()
        if name not in SHARED_ARGUMENTS
    }


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


def check_model_names(trainer_type: type[BaseTrainer], built_models: dict) -> None:
    expected = list(trainer_type.model_names)
    if sorted(built_models) != sorted(expected):
        given = "one model" if list(built_models) == ["model"] else sorted(built_models)
        raise UserError(
            f"arch: {trainer_type.__name__} trains the models {expected}, but the config names "
            f"{given}; give arch a node for each of them"
        )
