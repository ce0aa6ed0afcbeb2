"""`trainer.strategy: "fsdp"` (the distributed unit): each rank keeps a shard of the weights,
gradients and optimizer state (torch's `fully_shard`), while checkpoints keep one plain file
of full tensors.

A model is sharded unit by unit, each direct child that holds parameters and then the rest,
so that one unit's full weights exist only while it computes. Its buffers (BatchNorm's
statistics) are not sharded: as DDP does, every forward starts from rank 0's, so the ranks
never drift apart. The checkpoint's model and optimizer states are gathered into full
tensors, with the optimizer's in `torch.optim`'s own layout (parameters by number), so that a
checkpoint loads at any world size, or in one process without FSDP.
"""

import importlib
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from base.sharding import FSDP


def _states() -> Any:
    """torch's full (gathered) model and optimizer states."""
    return importlib.import_module("torch.distributed.checkpoint.state_dict")


def _full(on_rank_0: bool) -> Any:
    """Full states: gathered onto rank 0's CPU (saving), or taken whole by every rank (loading)."""
    return _states().StateDictOptions(full_state_dict=True, cpu_offload=on_rank_0)


def problem(settings: dict[str, Any]) -> str | None:
    """Why FSDP cannot serve this run (a line naming the key), else None. `settings`: the
    trainer options and parts it cannot take (amp, compile, model names, the hooks' class
    names)."""
    refusals = {
        "trainer.amp": settings["amp"] == "fp16"
        and "fp16 (its gradient scaler does not take sharded gradients); use 'bf16'",
        "trainer.compile": settings["compile"] is not False
        and "compiling (not tested with sharding); set it to false",
        "arch": len(settings["model_names"]) > 1 and "several models; shard one model",
        "trainer.hooks": "EMA" in settings["hooks"] and "EMA (it averages full weights)",
    }
    for key, refusal in refusals.items():
        if refusal:
            return f"{key}: trainer.strategy 'fsdp' cannot serve {refusal}"
    return None


def shard(model: nn.Module, optimizers: list[torch.optim.Optimizer]) -> None:
    """Shard `model` in place, and point `optimizers` at its sharded parameters (fully_shard
    makes new ones; the optimizers have no state yet: a resume loads it afterwards)."""
    fully_shard = importlib.import_module(FSDP).fully_shard
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    for child in model.children():
        if any(True for _ in child.parameters()):
            fully_shard(child)
    fully_shard(model)
    sharded = dict(model.named_parameters())
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["params"] = [
                sharded[names[id(p)]] if id(p) in names else p for p in group["params"]
            ]
    if any(True for _ in model.buffers()):
        model.register_forward_pre_hook(_buffers_from_rank_0)


def _buffers_from_rank_0(model: nn.Module, args: Any) -> None:
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def full_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A sharded model's state dict, gathered onto rank 0 (every rank must call it; the others
    get {})."""
    return _states().get_model_state_dict(model, options=_full(on_rank_0=True))


def load_full_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    _states().set_model_state_dict(model, weights, options=_full(on_rank_0=False))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """A sharded model's optimizer's full state on rank 0, in `optimizer.state_dict()`'s layout
    (every rank must call it; the others get {})."""
    state = _states().get_optimizer_state_dict(model, optimizer, options=_full(on_rank_0=True))
    number = {name: index for index, name in enumerate(_names(model, optimizer))}
    return _renumbered(state, number) if state else {}


def load_full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict
) -> None:
    """Load a full state in `optimizer.state_dict()`'s layout into the sharded optimizer."""
    state = _renumbered(saved, _names(model, optimizer))
    _states().set_optimizer_state_dict(model, optimizer, state, options=_full(on_rank_0=False))


def _renumbered(state: dict, key: Any) -> dict:
    """An optimizer's `state` with each parameter `p` (a name or a number) keyed as `key[p]`."""
    return {
        "state": {key[p]: values for p, values in state["state"].items()},
        "param_groups": [{**group, "params": [key[p] for p in group["params"]]}
                         for group in state["param_groups"]],
    }  # fmt: skip


def _names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The model's name of each parameter the optimizer holds, in its numbering's order."""
    by_id = {id(parameter): name for name, parameter in model.named_parameters()}
    return [by_id[id(p)] for group in optimizer.param_groups for p in group["params"]]
