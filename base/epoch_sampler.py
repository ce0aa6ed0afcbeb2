"""The order of samples in each epoch, reproducible from (seed, epoch) and resumable mid-epoch."""

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from utils.distributed.process_group import shard, share_size


class EpochSampler(Sampler[int]):
    """Sample indices for one epoch: a shuffle drawn from `seed + epoch` (or the plain order),
    this rank's share of it under torchrun, starting at position `start`.

    The order depends on nothing but the seed and the epoch, never on a global generator,
    so a run resumed in the middle of an epoch gets the same order and skips the samples it
    has already trained on without loading them (`set_epoch(epoch, start)`).
    """

    def __init__(self, size: int, shuffle: bool, seed: int | None = None) -> None:
        self.size = size
        self.shuffle = shuffle
        # By default drawn from the run's seeded generator: the same run seed, the same orders.
        # An unshuffled order needs none, and draws none (whatever the loader, the same seed
        # then gives the same initial weights).
        if seed is None:
            seed = int(torch.randint(2**62, ())) if shuffle else 0
        self.seed = seed
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Use `epoch`'s order from its `start`-th index (of this rank's share) on."""
        self.epoch, self.start = epoch, start

    def indices(self) -> torch.Tensor:
        """This rank's remaining indices of the current epoch."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        return shard(order)[self.start :]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return max(share_size(self.size) - self.start, 0)
