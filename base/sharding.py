"""What the core asks of a sharded model: whether a model or tensor is one, and its full
states. `trainer.strategy: "fsdp"` itself, sharding and gathering, is the distributed unit's
base/fsdp.py; only a run under torchrun, which that unit starts, can have a sharded model.
"""

import importlib
import sys
from types import ModuleType
from typing import Any

import torch
from torch import nn

# FSDP's modules take most of a second to import: they are imported when a model is sharded,
# and until then no model or tensor can be a sharded one.
FSDP, TENSOR = "torch.distributed.fsdp", "torch.distributed.tensor"


def fsdp() -> ModuleType:
    """base/fsdp.py, imported when first needed."""
    return importlib.import_module("base.fsdp")


def strategy_problem(strategy: str | None, distributed: bool, **settings: Any) -> str | None:
    """Why `trainer.strategy` cannot serve this run (a line naming the key), else None.
    `settings`: the trainer options and parts FSDP cannot take (amp, compile, model names,
    the hooks' class names)."""
    if strategy is None:
        return None
    if not distributed:
        return (f"trainer.strategy: {strategy!r} spreads a run over the processes torchrun "
                "starts (torchrun --nproc_per_node=N train.py ...); set it to null for one "
                "process (-o trainer.strategy=null)")  # fmt: skip
    return fsdp().problem(settings) if strategy == "fsdp" else None


def is_sharded(model: nn.Module) -> bool:
    """Whether fully_shard made `model` an FSDP module."""
    fsdp_module = sys.modules.get(FSDP)
    return fsdp_module is not None and isinstance(model, fsdp_module.FSDPModule)


def class_name(model: nn.Module) -> str:
    """The name of the model's own class (`LeNet`, not the `FSDPLeNet` fully_shard makes)."""
    if not is_sharded(model):
        return type(model).__name__
    fsdp_module = sys.modules[FSDP].FSDPModule
    return next(c for c in type(model).__mro__ if not issubclass(c, fsdp_module)).__name__


def is_sharded_tensor(tensor: torch.Tensor) -> bool:
    """Whether `tensor` is a DTensor (a sharded parameter, gradient or norm)."""
    dtensor = sys.modules.get(TENSOR)
    return dtensor is not None and isinstance(tensor, dtensor.DTensor)


def full_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict; a sharded model's gathered onto rank 0 (every rank must call it;
    the others get {})."""
    return fsdp().full_weights(model) if is_sharded(model) else model.state_dict()


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """`optimizer.state_dict()`; of a sharded model's optimizer, its full state on rank 0 in that
    layout (every rank must call it; the others get {})."""
    if is_sharded(model):
        return fsdp().full_optimizer_state(model, optimizer)
    return optimizer.state_dict()
