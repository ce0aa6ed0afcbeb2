"""The one contract a trainer needs from a data loader, whichever way it makes batches."""

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class EpochLoader(Protocol):
    """Batches of the training data in an order fixed by the epoch (see `EpochSampler`).

    `BaseDataLoader` (a `DataLoader` with worker processes) and `TensorDataLoader` (whole
    tensors in memory, cut by index) both satisfy it, and so can a loader of your own.
    """

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Use `epoch`'s order; the first `skip_batches` batches are done (not loaded again)."""

    def split_validation(self) -> Any:
        """A loader over the held-out validation samples, or None without a split."""

    def __len__(self) -> int:
        """Batches per pass."""

    def __iter__(self) -> Iterator[Any]:
        """The batches of the current epoch (from `skip_batches` on)."""
