"""Which batches each epoch trains on, and where the current epoch stands (mid-epoch resume)."""

from collections.abc import Iterator
from typing import Any

from base.epoch_loader import EpochLoader


class EpochBatches:
    """The batches of each epoch of a run, resumable from any position.

    Epoch-based (`batches_per_epoch` None): an epoch is one pass over the loader.
    Iteration-based: an epoch is `batches_per_epoch` batches, the loader carrying on where
    the previous epoch stopped and starting a new pass (numbered from 1) when it runs out.
    `batches_done` counts the current epoch's batches trained on (0 between epochs).
    """

    def __init__(self, data_loader: EpochLoader, batches_per_epoch: int | None = None) -> None:
        self.data_loader = data_loader
        self.iteration_based = batches_per_epoch is not None
        self.batches_per_epoch = batches_per_epoch or len(data_loader)
        self.batches_done = 0
        self.passes = 0  # iteration-based: passes over the loader started
        self.pass_batches = 0  # iteration-based: batches taken from the current pass
        self._batches: Iterator | None = None

    def remaining(self, epoch: int) -> Iterator[Any]:
        """This epoch's batches from `batches_done` on (those done are skipped unloaded)."""
        if not self.iteration_based:
            self.data_loader.set_epoch(epoch, skip_batches=self.batches_done)
            yield from self.data_loader
            return
        for _ in range(self.batches_per_epoch - self.batches_done):
            if self._batches is None:  # the first pass, or a resumed one
                self.passes = max(self.passes, 1)
                self.data_loader.set_epoch(self.passes, skip_batches=self.pass_batches)
                self._batches = iter(self.data_loader)
            batch = next(self._batches, None)
            if batch is None:
                self.passes, self.pass_batches = self.passes + 1, 0
                self.data_loader.set_epoch(self.passes)
                self._batches = iter(self.data_loader)
                batch = next(self._batches)
            self.pass_batches += 1
            yield batch

    def position(self) -> dict[str, int]:
        """Where the run stands in its data, as a checkpoint records it."""
        return {
            "batches_done": self.batches_done,
            "passes": self.passes,
            "pass_batches": self.pass_batches,
        }

    def load_position(self, position: dict[str, int]) -> None:
        """Go back (or forward) to a `position()`; the next `remaining` starts there."""
        self.batches_done = position["batches_done"]
        self.passes, self.pass_batches = position["passes"], position["pass_batches"]
        self._batches = None
