"""Batches of any shape: a tensor, or tuples, lists and dicts of them (nested)."""

from typing import Any

import torch


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Copy every tensor in `batch` to `device` without waiting (from pinned memory the copy is
    asynchronous); 4-d floating tensors optionally in channels-last layout (for convolutions)."""
    if isinstance(batch, torch.Tensor):
        image = channels_last and batch.dim() == 4 and batch.is_floating_point()
        layout = torch.channels_last if image else torch.preserve_format
        return batch.to(device, non_blocking=True, memory_format=layout)
    if isinstance(batch, dict):
        return {key: to_device(value, device, channels_last) for key, value in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(value, device, channels_last) for value in batch)
    return batch


def batch_size(batch: Any) -> int:
    """The number of samples in `batch`: the first dimension of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return len(batch)
    values = batch.values() if isinstance(batch, dict) else batch
    for value in values:
        size = batch_size(value)
        if size:
            return size
    return 0


def first_samples(batch: Any, n: int) -> Any:
    """The first `n` samples of `batch` (of each tensor in it)."""
    if isinstance(batch, torch.Tensor):
        return batch[:n]
    if isinstance(batch, dict):
        return {key: first_samples(value, n) for key, value in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(first_samples(value, n) for value in batch)
    return batch


def is_image_batch(batch: Any) -> bool:
    """Whether `batch` is a tensor of images, (B, C, H, W) with 1, 3 or 4 channels."""
    if not isinstance(batch, torch.Tensor) or batch.dim() != 4:
        return False
    return batch.shape[1] in (1, 3, 4) and batch.is_floating_point()


def call_model(model: torch.nn.Module, inputs: Any) -> Any:
    """`model(inputs)` for a tensor, `model(*inputs)` for a tuple or list, `model(**inputs)`
    for a dict: how a multi-input model receives its inputs."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)
