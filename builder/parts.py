"""The data loader, the models, the loss and the metrics a config names."""

import importlib
import inspect
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import data_loader
import model
from base import EpochLoader
from utils.config.build import (
    build_callable,
    instantiate,
    is_subclass_of,
    lookup,
    lookup_in_package,
)
from utils.config.check import is_named_nodes, metric_name, node_path
from utils.errors import UserError

# Where a `metrics` entry's type is looked up, the first one that has it winning: the domain
# modules before the top level, whose image, audio and text names are deprecated aliases.
DOMAINS = ("image", "audio", "text", "segmentation", "detection", "clustering")
METRIC_MODULES = (*(f"torchmetrics.{domain}" for domain in DOMAINS), "torchmetrics",
                  "torchmetrics.classification", "torchmetrics.regression")  # fmt: skip


def build_data_loader(config: dict, device: torch.device, **overrides: Any) -> EpochLoader:
    """The configured data loader; `overrides` replace config args (test.py sets `training`).

    A loader whose constructor takes `device` (the in-memory one) is told the training
    device, where it keeps its tensors with `device_resident: true`.
    """
    node = config["data_loader"]
    loader_class = lookup_in_package("data_loader", node["type"], data_loader, _is_loader)
    if "device" in inspect.signature(loader_class).parameters:
        overrides["device"] = device
    return instantiate("data_loader", loader_class, {**node["args"], **overrides})


def build_models(config: dict, weights_from_checkpoint: bool = False) -> dict[str, nn.Module]:
    """The models `arch` names; with `weights_from_checkpoint`, a model's own initial weights
    (`BaseModel.initial_weights_argument`) are not loaded, since a checkpoint's replace them."""
    arch = config["arch"]
    nodes = arch if is_named_nodes(arch) else {"model": arch}
    accept = is_subclass_of(nn.Module)
    built = {}
    for name, node in nodes.items():
        path = node_path(config, "arch", name)
        model_class = lookup_in_package(path, node["type"], model, accept)
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
    losses = importlib.import_module("model.loss")  # (the project's: imported when built)
    loss = lookup("loss", node["type"], [losses, nn], _is_loss)
    return build_callable("loss", loss, node["args"], n_inputs=2)


def build_metrics(config: dict) -> dict[str, Callable]:
    """Metrics by the name they are logged under (`name`, else their `type`): functions of
    model/metric.py (batch means), or torchmetrics classes, built (whole-split values)."""
    built: dict[str, Callable] = {}
    metrics = importlib.import_module("model.metric")  # (yours may import torchmetrics)
    for index, node in enumerate(config["metrics"]):
        path = f"metrics[{index}]"
        name = metric_name(node)
        key = f"{path}.name" if node.get("name") else f"{path}.type"
        if name in built:
            raise UserError(f"{key}: {name!r} is listed twice; each metric is logged once")
        if name == "loss":
            raise UserError(f"{key}: 'loss' is reserved for the training loss")
        own = vars(metrics).get(node["type"])
        modules = [metrics]  # torchmetrics (a second to import) only when the name is not ours
        if own is None or not _is_metric(own):
            modules += [importlib.import_module(name) for name in METRIC_MODULES]
        where = "model.metric or torchmetrics (and its .classification, .regression, .image, ...)"
        metric = lookup(path, node["type"], modules, _is_metric, where=where)
        built[name] = build_callable(path, metric, node["args"], n_inputs=2)
    return built


def _is_loader(value: Any) -> bool:
    """A loader of the project's (the base classes it derives from take tensors or a
    dataset, which no config can give)."""
    return is_subclass_of(EpochLoader)(value) and not value.__module__.startswith("base.")


def _is_metric(value: Any) -> bool:
    """A function of model/metric.py, or a torchmetrics `Metric` class (then torchmetrics is
    imported: by model/metric.py, which defines it, or by the lookup)."""
    torchmetrics = sys.modules.get("torchmetrics")
    return inspect.isfunction(value) or (
        torchmetrics is not None and is_subclass_of(torchmetrics.Metric)(value)
    )


def _is_loss(value: Any) -> bool:
    """A torch.nn loss class, or a function or module of the project's (not torch's own)."""
    if is_subclass_of(nn.modules.loss._Loss)(value):
        return True
    own = not getattr(value, "__module__", "torch").startswith("torch")
    return own and (inspect.isfunction(value) or is_subclass_of(nn.Module)(value))
