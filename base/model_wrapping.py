"""The module training calls: DDP, DataParallel and `torch.compile` around the plain model."""

import logging
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from base.hook import Hook
from base.sharding import fsdp, strategy_problem
from utils.distributed.process_group import is_distributed
from utils.errors import UserError

logger = logging.getLogger(__name__)


def place_models(
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    device: torch.device,
    device_ids: Sequence[int],
    *,
    channels_last: bool,
    compile_option: bool | dict,
    strategy: str | None,
    amp: str | bool,
    hooks: Sequence[Hook],
) -> dict[str, nn.Module]:
    """The modules training calls, by name: each model moved to `device` in place (the
    optimizers keep their parameters), then wrapped (`wrap_model`). A `strategy` that cannot
    serve the run (its `amp`, `compile_option`, models and hooks) is refused first."""
    problem = strategy_problem(strategy, is_distributed(), amp=amp, compile=compile_option,
                               model_names=list(models),
                               hooks=[type(hook).__name__ for hook in hooks])  # fmt: skip
    if problem:
        raise UserError(problem)
    for model in models.values():
        model.to(device, memory_format=torch.channels_last if channels_last else None)
    return {
        name: wrap_model(model, device, device_ids, compile_option, strategy, optimizers.values())
        for name, model in models.items()
    }


def wrap_model(
    model: nn.Module,
    device: torch.device,
    device_ids: Sequence[int],
    compile_option: bool | dict,
    strategy: str | None = None,
    optimizers: Iterable[torch.optim.Optimizer] = (),
) -> nn.Module:
    """DDP under torchrun (`strategy` "fsdp": the model sharded in place, and `optimizers`
    pointed at its shards), DataParallel for several GPUs in one process, then
    `torch.compile` when asked. Checkpoints keep using the unwrapped model. A model without
    trainable parameters (nothing to synchronise) is not wrapped in DDP."""
    trainable = any(parameter.requires_grad for parameter in model.parameters())
    if strategy == "fsdp":
        fsdp().shard(model, list(optimizers))
    elif is_distributed() and trainable:
        ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=ids)
    elif len(device_ids) > 1:
        logger.warning(
            "n_gpu > 1 in one process uses DataParallel; `torchrun --nproc_per_node=%d "
            "train.py ...` (DistributedDataParallel) is faster.",
            len(device_ids),
        )
        model = nn.DataParallel(model, device_ids=list(device_ids))
    if compile_option is False:
        return model
    args = {} if compile_option is True else compile_option
    try:
        return torch.compile(model, **args)  # checks its arguments now, compiles on first call
    except (TypeError, ValueError, RuntimeError, AttributeError) as error:
        detail = " ".join(str(error).split())
        raise UserError(f"trainer.compile: {detail}; see torch.compile for its arguments") from None
