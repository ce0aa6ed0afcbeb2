"""A data loader for datasets that fit in memory: batches are cut from whole tensors by index."""

import math
from collections.abc import Iterator, Sequence

import torch

from base.base_data_loader import EpochSampler, split_indices


class TensorDataLoader:
    """Batches of `tensors` (inputs, targets, ...; equal first dimension) cut by index.

    One gather per tensor per batch replaces the per-sample `__getitem__` and collate of a
    `DataLoader`: no workers, almost no Python per sample. With `device_resident` the tensors
    move once to the training device, and batches never cross the PCIe bus. Splits, epoch
    orders and torchrun shares are those of `BaseDataLoader` (`split_indices`, `EpochSampler`).
    """

    def __init__(
        self,
        tensors: Sequence[torch.Tensor],
        batch_size: int,
        shuffle: bool = True,
        validation_split: float | int = 0.0,
        drop_last: bool = False,
        device_resident: bool = False,
        split_seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        sizes = {len(tensor) for tensor in tensors}
        if len(sizes) != 1:
            raise ValueError(f"tensors must have the same first dimension, got {sorted(sizes)}")
        train_indices, valid_indices = split_indices(sizes.pop(), validation_split, split_seed)
        if valid_indices:
            self.valid_tensors = tuple(t[valid_indices] for t in tensors)
            tensors = tuple(t[train_indices] for t in tensors)
        else:
            self.valid_tensors = None
        # Resident: on the training device. Otherwise batches are gathered into page-locked
        # memory when they will be copied to a GPU, so that the copy overlaps with compute.
        self.device = torch.device(device) if device_resident else torch.device("cpu")
        self.pin_memory = not device_resident and torch.device(device).type == "cuda"
        self.tensors = tuple(tensor.to(self.device) for tensor in tensors)
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.device_resident = device_resident
        self.target_device = device
        self.sampler = EpochSampler(len(self.tensors[0]), shuffle)

    @property
    def dataset(self) -> torch.Tensor:
        """The first tensor, so that `len(loader.dataset)` is the number of samples, as usual."""
        return self.tensors[0]

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.sampler.set_epoch(epoch, skip_batches * self.batch_size)

    def __len__(self) -> int:
        rounded = math.floor if self.drop_last else math.ceil  # (a smaller last batch or none)
        return rounded(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        order = self.sampler.indices().to(self.device, non_blocking=True)
        stop = len(self) * self.batch_size
        for start in range(0, stop, self.batch_size):
            index = order[start : start + self.batch_size]
            yield tuple(self._gather(tensor, index) for tensor in self.tensors)

    def _gather(self, tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if not self.pin_memory:
            return tensor[index]
        batch = torch.empty((len(index), *tensor.shape[1:]), dtype=tensor.dtype, pin_memory=True)
        return torch.index_select(tensor, 0, index, out=batch)

    def split_validation(self) -> "TensorDataLoader | None":
        if self.valid_tensors is None:
            return None
        return TensorDataLoader(
            self.valid_tensors,
            self.batch_size,
            shuffle=False,
            device_resident=self.device_resident,
            device=self.target_device,
        )
