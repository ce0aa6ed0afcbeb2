"""How the template's data loaders split and order samples, and `BaseDataLoader`, a `DataLoader`
that can hold back a validation split."""

import math
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from utils.distributed.process_group import repeats_in_share, shard, share_size
from utils.errors import UserError
from utils.stop_signals import ignore_stop_signals


def split_indices(
    size: int, validation_split: float | int, seed: int
) -> tuple[list[int], list[int]]:
    """Shuffle `range(size)` with its own generator and cut off the validation part.

    `validation_split` is a fraction in [0, 1) or a number of samples; a split that holds
    back no sample, or leaves none to train on, is refused. The generator is local, so the
    split is the same whatever the run's seed, and no global RNG is touched.
    """
    key = "data_loader.args.validation_split"
    if size == 0:
        raise UserError("data_loader: the dataset holds no sample; check data_loader.args and "
                        "the data")  # fmt: skip
    if isinstance(validation_split, bool) or not isinstance(validation_split, int | float):
        raise UserError(f"{key}: {validation_split!r} is not valid; expected a number")
    if isinstance(validation_split, int):
        if not 0 <= validation_split < size:
            raise UserError(f"{key}: {validation_split} is not valid; expected a number of "
                            f"samples in [0, {size}) (the dataset holds {size})")  # fmt: skip
        n_valid = validation_split
    else:
        if not 0.0 <= validation_split < 1.0:
            raise UserError(f"{key}: {validation_split} is not valid; expected a fraction in "
                            "[0, 1)")  # fmt: skip
        n_valid = math.floor(size * validation_split + 1e-9)  # 0.29 * 100 is 28.999...
    if validation_split and n_valid == 0:
        raise UserError(
            f"{key}: {validation_split} of {size} samples holds "
            "back none for validation; give a larger fraction, a number of samples >= 1, or 0 "
            "for no validation"
        )
    if n_valid == size:
        raise UserError(
            f"{key}: {validation_split} of {size} samples leaves "
            "none for training; give a smaller fraction"
        )
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[n_valid:]), sorted(order[:n_valid])


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

    @property
    def repeats(self) -> int:
        """How many of this rank's last indices repeat another rank's (to even the shares)."""
        return repeats_in_share(self.size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return max(share_size(self.size) - self.start, 0)


class BaseDataLoader(DataLoader):
    """A `DataLoader` over the training part of `dataset`; `split_validation()` gives the rest.

    The order of each epoch comes from an `EpochSampler` (a seed drawn here from the run's
    seeded generator, plus the epoch), and the worker seeds from a generator the trainer
    reseeds in `set_epoch`: the same seed gives the same batches, a resumed run the batches
    it would have had, and under torchrun every rank its own equal share. Worker processes
    ignore Ctrl-C and SIGTERM; the main process decides when to stop.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool = True,
        validation_split: float | int = 0.0,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        collate_fn: Callable | None = None,
        drop_last: bool = False,
        split_seed: int = 0,
    ) -> None:
        # (A bad batch_size or num_workers is refused by the config's check and by DataLoader.)
        train_indices, valid_indices = split_indices(len(dataset), validation_split, split_seed)
        self.valid_dataset = Subset(dataset, valid_indices) if valid_indices else None
        self.loader_options = {
            "batch_size": batch_size,
            "num_workers": num_workers,
            # Pinned host memory only helps (and only works) when there is a GPU to copy to.
            "pin_memory": torch.cuda.is_available() if pin_memory is None else pin_memory,
            "collate_fn": collate_fn,
            "worker_init_fn": ignore_stop_signals,
        }
        train_dataset = Subset(dataset, train_indices) if valid_indices else dataset
        sampler = EpochSampler(len(train_dataset), shuffle)
        super().__init__(
            train_dataset,
            sampler=sampler,
            drop_last=drop_last,
            generator=torch.Generator(),  # draws each epoch's worker seeds; see set_epoch
            **self.loader_options,
        )

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Choose the order and worker seeds of `epoch`, and how many of its batches are done
        (those are skipped without being loaded)."""
        self.sampler.set_epoch(epoch, skip_batches * self.batch_size)
        self.generator.manual_seed(self.sampler.seed + epoch)

    def split_validation(self) -> DataLoader | None:
        """A loader over the held-out samples, in a fixed order (this rank's share of them
        under torchrun); None without a split."""
        if self.valid_dataset is None:
            return None
        sampler = EpochSampler(len(self.valid_dataset), shuffle=False, seed=0)
        return DataLoader(self.valid_dataset, sampler=sampler, **self.loader_options)
