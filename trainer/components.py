"""Build the parts of a run that the config names, each only from its designated modules.

This is the one table of where a config `type` may come from:
`arch` from `model.model`, `data_loader` from `data_loader.data_loaders`, `loss` from
`model.loss` then `torch.nn`'s loss classes, `metrics` from `model.metric`, `optimizer`
from `torch.optim`, `lr_scheduler` from `torch.optim.lr_scheduler`.
"""

import inspect
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
from torch import nn
from torch.optim import lr_scheduler as schedulers

import data_loader.data_loaders as data_loaders
import model.loss as losses
import model.metric as metrics
import model.model as models
from base import BaseDataLoader, TensorDataLoader
from utils.build import build_callable, instantiate, is_subclass_of, lookup
from utils.errors import UserError


def build_data_loader(
    config: dict, device: torch.device, **overrides
) -> BaseDataLoader | TensorDataLoader:
    """The configured data loader; `overrides` replace config args (test.py sets `training`).

    An in-memory `TensorDataLoader` is also told the training `device`, where it keeps its
    tensors when the config says `device_resident: true`.
    """
    node = config["data_loader"]
    loader_class = lookup(
        "data_loader",
        node["type"],
        [data_loaders],
        is_subclass_of(BaseDataLoader, TensorDataLoader),
    )
    if is_subclass_of(TensorDataLoader)(loader_class):
        overrides["device"] = device
    return instantiate("data_loader", loader_class, {**node["args"], **overrides})


def build_model(config: dict) -> nn.Module:
    node = config["arch"]
    model_class = lookup("arch", node["type"], [models], is_subclass_of(nn.Module))
    return instantiate("arch", model_class, node["args"])


def build_loss(config: dict) -> Callable:
    node = config["loss"]
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


def build_optimizer(config: dict, parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    node = config["optimizer"]
    optimizer_class = lookup(
        "optimizer", node["type"], [torch.optim], is_subclass_of(torch.optim.Optimizer)
    )
    return instantiate("optimizer", optimizer_class, node["args"], parameters)


def build_lr_scheduler(
    config: dict, optimizer: torch.optim.Optimizer
) -> schedulers.LRScheduler | schedulers.ReduceLROnPlateau | None:
    """The configured LR scheduler, or None when `lr_scheduler` is null."""
    node = config["lr_scheduler"]
    if node is None:
        return None
    scheduler_class = lookup(
        "lr_scheduler",
        node["type"],
        [schedulers],
        is_subclass_of(schedulers.LRScheduler, schedulers.ReduceLROnPlateau),
    )
    return instantiate("lr_scheduler", scheduler_class, node["args"], optimizer)


def _is_loss(value) -> bool:
    """A torch.nn loss class, or a function or module of the project's (not torch's own)."""
    if is_subclass_of(nn.modules.loss._Loss)(value):
        return True
    own = not getattr(value, "__module__", "torch").startswith("torch")
    return own and (inspect.isfunction(value) or is_subclass_of(nn.Module)(value))


class Components(NamedTuple):
    data_loader: BaseDataLoader | TensorDataLoader
    model: nn.Module
    criterion: Callable
    metric_fns: dict[str, Callable]
    optimizer: torch.optim.Optimizer
    lr_scheduler: schedulers.LRScheduler | schedulers.ReduceLROnPlateau | None


def build_components(config: dict, device: torch.device) -> Components:
    """Build every part the config names; a problem in one does not hide the others, all of
    them are reported together (one line, ` | ` between them)."""
    errors: list[str] = []

    def attempt(build: Callable, *args):
        try:
            return build(*args)
        except UserError as error:
            errors.append(str(error))
            return None

    data_loader = attempt(build_data_loader, config, device)
    model = attempt(build_model, config)
    criterion = attempt(build_loss, config)
    metric_fns = attempt(build_metrics, config)
    # Where a part failed, a stand-in still lets the arguments of the next ones be checked.
    stand_in = [nn.Parameter(torch.zeros(1))]
    parameters = stand_in if model is None else [p for p in model.parameters() if p.requires_grad]
    optimizer = attempt(build_optimizer, config, parameters)
    lr_scheduler = attempt(
        build_lr_scheduler, config, optimizer or torch.optim.SGD(stand_in, lr=0.1)
    )
    if errors:
        raise UserError(" | ".join(errors))
    return Components(data_loader, model, criterion, metric_fns, optimizer, lr_scheduler)
