"""Build the parts of a run that the config names, each only from its designated modules.

This is the one table of where a config `type` may come from:
`arch` from `model.model`, `data_loader` from `data_loader.data_loaders`, `loss` from
`model.loss` then `torch.nn`'s loss classes, `metrics` from `model.metric`, `optimizer`
from `torch.optim`, `lr_scheduler` from `torch.optim.lr_scheduler`, `trainer.type` from the
modules of the `trainer` package, `trainer.hooks` from the modules of `trainer.hooks`.
"""

import importlib
import inspect
import math
import pkgutil
import threading
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler as schedulers

import data_loader.data_loaders as data_loaders
import model.loss as losses
import model.metric as metrics
import model.model as models
import trainer
import trainer.hooks as hooks
from base import BaseTrainer, EpochLoader, Hook
from trainer.hooks import (
    Checkpointer,
    CSVLogger,
    EarlyStopping,
    LRSchedulerStep,
    ProgressBar,
    StopOnSignal,
    TensorBoardLogger,
    WandbLogger,
)
from utils.build import build_callable, instantiate, is_subclass_of, lookup
from utils.config import check_node, is_named_nodes
from utils.config_keys import Key
from utils.errors import UserError
from utils.param_groups import build_param_groups

SHARED_ARGUMENTS = set(inspect.signature(BaseTrainer.__init__).parameters) | {
    "self", "args", "kwargs", "criterion", "metric_fns",
}  # fmt: skip
# Trainer keys that are not the trainer's constructor arguments: the built-in hooks' (see
# `build_hooks`), the run directory's and the console's, and the choice of trainer and hooks.
NOT_TRAINER_ARGUMENTS = {"save_dir", "save_period", "keep_last", "save_every_steps",
                         "early_stop", "tensorboard", "log_images", "metrics_csv", "progress_bar",
                         "verbosity", "type", "hooks"}  # fmt: skip


BUILT_IN = (Checkpointer, CSVLogger, EarlyStopping, LRSchedulerStep, ProgressBar, StopOnSignal,
            TensorBoardLogger, WandbLogger)  # fmt: skip


def package_modules(package: ModuleType) -> list[ModuleType]:
    """The package and each module directly in it: where its classes may be looked up."""
    names = [info.name for info in pkgutil.iter_modules(package.__path__)]
    return [package, *(importlib.import_module(f"{package.__name__}.{name}") for name in names)]


def trainer_class(name: str) -> type[BaseTrainer]:
    modules = package_modules(trainer)
    return lookup("trainer", name, modules, is_subclass_of(BaseTrainer), "the modules of trainer/")


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
        name: Key((object,), None if p.default is p.empty else p.default)
        for name, p in accepted_arguments(trainer_class(name)).items()
        if name not in SHARED_ARGUMENTS
    }


def build_data_loader(config: dict, device: torch.device, **overrides: Any) -> EpochLoader:
    """The configured data loader; `overrides` replace config args (test.py sets `training`).

    A loader whose constructor takes `device` (the in-memory one) is told the training
    device, where it keeps its tensors with `device_resident: true`.
    """
    node = config["data_loader"]
    loader_class = lookup("data_loader", node["type"], [data_loaders], is_subclass_of(EpochLoader))
    if "device" in inspect.signature(loader_class).parameters:
        overrides["device"] = device
    return instantiate("data_loader", loader_class, {**node["args"], **overrides})


def named(node: dict, names: Iterable[str], path: str) -> dict[str, dict]:
    """A node for each of `names`: a mapping's own nodes, or one node shared by all."""
    names = list(names)
    if not is_named_nodes(node):
        return dict.fromkeys(names, node)
    if set(node) != set(names):
        raise UserError(f"{path}: names {sorted(node)} do not match the models {names}")
    return node


def build_models(config: dict, weights_from_checkpoint: bool = False) -> dict[str, nn.Module]:
    """The models `arch` names; with `weights_from_checkpoint`, a model's own initial weights
    (`BaseModel.initial_weights_argument`) are not loaded, since a checkpoint's replace them."""
    arch = config["arch"]
    nodes = arch if is_named_nodes(arch) else {"model": arch}
    accept = is_subclass_of(nn.Module)
    built = {}
    for name, node in nodes.items():
        path = f"arch.{name}" if is_named_nodes(arch) else "arch"
        model_class = lookup(path, node["type"], [models], accept)
        args = node["args"]
        initial_weights = getattr(model_class, "initial_weights_argument", None)
        if weights_from_checkpoint and args.get(initial_weights) is not None:
            args = {**args, initial_weights: None}
        built[name] = instantiate(path, model_class, args)
    return built


def build_loss(config: dict) -> Callable | None:
    node = config["loss"]
    if node is None:
        return None
    loss = lookup("loss", node["type"], [losses, nn], _is_loss)
    return build_callable("loss", loss, node["args"], n_inputs=2)


def build_metrics(config: dict) -> dict[str, Callable]:
    """Metric functions by the name they are logged under (their `type`)."""
    built: dict[str, Callable] = {}
    for index, node in enumerate(config["metrics"]):
        path = f"metrics[{index}]"
        name = node["type"]
        if name in built:
            raise UserError(f"{path}.type: {name!r} is listed twice; each metric is logged once")
        if name == "loss":
            raise UserError(f"{path}.type: 'loss' is reserved for the training loss")
        metric = lookup(path, name, [metrics], inspect.isfunction)
        built[name] = build_callable(path, metric, node["args"], n_inputs=2)
    return built


def build_optimizers(
    config: dict, built_models: dict[str, nn.Module], groups: bool = True
) -> dict[str, torch.optim.Optimizer]:
    """One optimizer per model, over its trainable parameters (models without any get none),
    in the parameter groups its node's `param_groups` make (utils/param_groups.py); without
    `groups` (stand-in models, whose names are not the config's), in one group."""
    nodes = named(config["optimizer"], built_models, "optimizer")
    accept = is_subclass_of(torch.optim.Optimizer)
    optimizers = {}
    for name, node in nodes.items():
        model = built_models[name]
        parameters = [p for p in model.parameters() if p.requires_grad]
        if parameters:
            path = f"optimizer.{name}" if is_named_nodes(config["optimizer"]) else "optimizer"
            optimizer_class = lookup(path, node["type"], [torch.optim], accept)
            if groups and node.get("param_groups"):
                parameters = build_param_groups(model, node["param_groups"],
                                                f"{path}.param_groups", optimizer_class,
                                                node["args"])  # fmt: skip
            optimizers[name] = instantiate(path, optimizer_class, node["args"], parameters)
    return optimizers


def build_lr_schedulers(
    config: dict, optimizers: dict[str, torch.optim.Optimizer], steps_per_epoch: int
) -> tuple[dict[str, Any], dict[str, str]]:
    """The LR scheduler of each optimizer, and whether it steps per "epoch" or "step"
    (`OneCycleLR` by default per step, the others per epoch)."""
    node = config["lr_scheduler"]
    if node is None:
        return {}, {}
    built, intervals = {}, {}
    for name, child in named(node, optimizers, "lr_scheduler").items():
        path = f"lr_scheduler.{name}" if is_named_nodes(node) else "lr_scheduler"
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


def build_hooks(config: dict, intervals: dict[str, str]) -> list[Hook]:
    """The built-in hooks the trainer keys (and the `wandb` key) ask for, with the user's
    `trainer.hooks` placed before the ones that save (so a checkpoint includes their work)
    and log. metrics.csv is written just before the `Checkpointer` saves, so that a
    checkpoint never has an epoch whose row is not on disk."""
    options = config["trainer"]
    user = []
    for index, node in enumerate(options["hooks"]):
        path = f"trainer.hooks[{index}]"
        modules, where = package_modules(hooks), "the modules of trainer/hooks/"
        hook_class = lookup(path, node["type"], modules, _is_hook, where)
        user.append(_instantiate_hook(path, hook_class, node["args"]))
    built = [LRSchedulerStep(intervals)] if intervals else []
    built += user
    if options["early_stop"] > 0:
        built.append(EarlyStopping(options["early_stop"]))
    built.append(StopOnSignal())
    if options["metrics_csv"]:
        built.append(CSVLogger())
    built.append(Checkpointer(options["save_period"], options["keep_last"],
                              options["save_every_steps"]))  # fmt: skip
    if options["tensorboard"]:
        built.append(TensorBoardLogger(options["log_images"]))
    if config["wandb"] is not None:
        built.append(_wandb_logger(config["wandb"], user))
    if options["progress_bar"]:
        built.append(ProgressBar())
    return built


def _instantiate_hook(path: str, hook_class: type[Hook], args: dict) -> Hook:
    """`instantiate`, with the config path put before a hook's own one-line error (a missing
    optional package)."""
    try:
        return instantiate(path, hook_class, args)
    except UserError as error:
        message = str(error)
        raise UserError(message if message.startswith(path) else f"{path}: {message}") from None


def _wandb_logger(args: dict, user_hooks: list[Hook]) -> WandbLogger:
    """The `WandbLogger` of the top-level `wandb` key, whose keys are its arguments."""
    for index, hook in enumerate(user_hooks):
        if isinstance(hook, WandbLogger):
            raise UserError(
                f"wandb: trainer.hooks[{index}] is a WandbLogger too; turn W&B on one way "
                "only (remove the wandb key or that hook)"
            )
    try:
        return _instantiate_hook("wandb", WandbLogger, args)
    except UserError as error:  # its keys are the arguments: wandb.project, not wandb.args.project
        raise UserError(str(error).replace("wandb.args", "wandb", 1)) from None


def trainer_options(config: dict) -> dict[str, Any]:
    """The trainer keys that are the trainer's own constructor arguments (not a hook's)."""
    return {
        key: value for key, value in config["trainer"].items() if key not in NOT_TRAINER_ARGUMENTS
    }


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
    built_models = attempt(build_models, config, weights_from_checkpoint or evaluation)
    criterion, metric_fns = attempt(build_loss, config), attempt(build_metrics, config)
    # Where a part failed, a stand-in still lets the arguments of the next ones be checked.
    stand_in = {name: nn.Linear(1, 1) for name in built_models or ["model"]}
    optimizers = attempt(build_optimizers, config, built_models or stand_in, bool(built_models))
    n_steps = steps_per_epoch(config, data_loader) if data_loader is not None else 1
    stand_in_optimizers = {n: torch.optim.SGD(m.parameters(), lr=0.1) for n, m in stand_in.items()}
    built = attempt(build_lr_schedulers, config, optimizers or stand_in_optimizers, n_steps)
    lr_schedulers, intervals = built or ({}, {})
    hook_list = attempt(build_hooks, config, intervals)
    if errors:
        raise UserError(" | ".join(errors))
    options = trainer_options(config)
    if evaluation:
        hook_list = [hook for hook in hook_list if not isinstance(hook, BUILT_IN)]
        options["monitor"] = "off"  # nothing is monitored without training
    if threading.current_thread() is not threading.main_thread():
        # Python delivers signals to the main thread only: a run in another thread (a Ray
        # Tune trial) is stopped by the program that owns that thread.
        hook_list = [hook for hook in hook_list if not isinstance(hook, StopOnSignal)]
    hook_list = [*hook_list, *extra_hooks]
    options.update(runtime_arguments(trainer_type, criterion, metric_fns))
    _check_model_names(trainer_type, built_models)
    return trainer_type(
        built_models, optimizers, data_loader, device=device, config=config,
        valid_data_loader=valid_data_loader, lr_schedulers=lr_schedulers, hooks=hook_list,
        device_ids=list(device_ids), **options,
    )  # fmt: skip


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


def _check_model_names(trainer_type: type[BaseTrainer], built_models: dict) -> None:
    expected = list(trainer_type.model_names)
    if sorted(built_models) != sorted(expected):
        given = "one model" if list(built_models) == ["model"] else sorted(built_models)
        raise UserError(
            f"arch: {trainer_type.__name__} trains the models {expected}, but the config names "
            f"{given}; give arch a node for each of them"
        )


def _is_hook(value: Any) -> bool:
    return is_subclass_of(Hook)(value) and value is not Hook


def _is_loss(value: Any) -> bool:
    """A torch.nn loss class, or a function or module of the project's (not torch's own)."""
    if is_subclass_of(nn.modules.loss._Loss)(value):
        return True
    own = not getattr(value, "__module__", "torch").startswith("torch")
    return own and (inspect.isfunction(value) or is_subclass_of(nn.Module)(value))
