"""The one contract a trainer needs from a data loader, which batches each epoch trains on, and
where the current epoch stands (mid-epoch resume)."""

import logging
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from utils.distributed.process_group import is_main_process, world_size
from utils.errors import UserError, error_summary

logger = logging.getLogger(__name__)


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


class BatchFailed(Exception):
    """The data loader raised (the user's dataset, in a worker or not) while giving the batch
    after `batches_done`; that error is the `__cause__`."""

    def summary(self) -> str:
        """`Type: message` of the error raised, also when a worker raised it: torch then
        raises the same type with the worker's traceback as its message, the error last."""
        text = str(self.__cause__)
        if "\nOriginal Traceback" in text:
            return text.strip().splitlines()[-1]
        return error_summary(self.__cause__)


class EpochBatches:
    """The batches of each epoch of a run, resumable from any position.

    Epoch-based (`batches_per_epoch` None): an epoch is one pass over the loader.
    Iteration-based: an epoch is `batches_per_epoch` batches, the loader carrying on where
    the previous epoch stopped and starting a new pass (numbered from 1) when it runs out.
    `batches_done` counts the current epoch's batches trained on (0 between epochs).
    A loader that gives no batch is refused here, before a run trains on nothing.
    """

    def __init__(self, data_loader: EpochLoader, batches_per_epoch: int | None = None) -> None:
        if len(data_loader) == 0:
            raise UserError(no_batch_message(data_loader))
        self.data_loader = data_loader
        self.iteration_based = batches_per_epoch is not None
        self.batches_per_epoch = batches_per_epoch or len(data_loader)
        self.batches_done = 0
        self.passes = 0  # iteration-based: passes over the loader started
        self.pass_batches = 0  # iteration-based: batches taken from the current pass
        self._batches: Iterator | None = None

    def remaining(self, epoch: int) -> Iterator[Any]:
        """This epoch's batches from `batches_done` on (those done are skipped unloaded). An
        error from the loader comes out as `BatchFailed`, so that the trainer tells it from
        one of its own step: the state from before the batch is then whole, and worth saving."""
        try:
            yield from self._remaining(epoch)
        except UserError:
            raise
        except Exception as error:
            raise BatchFailed from error

    def _remaining(self, epoch: int) -> Iterator[Any]:
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
                batch = next(self._batches, None)
            if batch is None:  # a loader whose `len` promised batches (StopIteration otherwise)
                raise UserError(no_batch_message(self.data_loader))
            self.pass_batches += 1
            yield batch

    def position(self) -> dict[str, int]:
        """Where the run stands in its data, as a checkpoint records it: in batches of each of
        `world_size` processes."""
        return {
            "batches_done": self.batches_done,
            "passes": self.passes,
            "pass_batches": self.pass_batches,
            "world_size": world_size(),
        }

    def in_this_world(self, position: dict[str, int], group: int) -> dict[str, int]:
        """`position` counted in this run's processes. The ranks take turns through one order
        of the epoch (`shard`), so N batches of each of W ranks are its first N x W batches;
        here they are rounded down to whole batches (and, by epoch, accumulation `group`s)
        of each rank: the few samples in between are trained again. A position saved
        without `world_size` (older checkpoints) is taken as this world's."""
        saved, ranks = position.get("world_size", world_size()), world_size()
        key = "pass_batches" if self.iteration_based else "batches_done"
        if saved == ranks or position[key] == 0:
            return {**position, "world_size": ranks}
        done = min(position[key] * saved // ranks, len(self.data_loader))
        done -= 0 if self.iteration_based else done % group
        again = position[key] * saved - done * ranks  # batches trained twice
        again_text = f" (the samples of {_batches(again)} before that are trained again)"
        if is_main_process():  # (every rank computes the same)
            logger.warning(
                "the checkpoint was saved by %s %s into this pass over the data; with %d, %s "
                "goes on after %d%s", "1 process," if saved == 1 else f"{saved} processes, each",
                _batches(position[key]), ranks, "it" if ranks == 1 else "each", done,
                again_text if again else "",
            )  # fmt: skip
        return {**position, key: done, "world_size": ranks}

    def load_position(self, position: dict[str, int]) -> None:
        """Go back (or forward) to a `position()`; the next `remaining` starts there."""
        self.batches_done = position["batches_done"]
        self.passes, self.pass_batches = position["passes"], position["pass_batches"]
        self._batches = None


def _batches(n: int) -> str:
    return f"{n} batch{'' if n == 1 else 'es'}"


def no_batch_message(data_loader: EpochLoader) -> str:
    """Why a loader gives no batch, for a `UserError`: with the template's loaders, fewer
    samples than one batch and `drop_last` (the sizes are named); otherwise an empty loader."""
    sized = all(hasattr(data_loader, name) for name in ("batch_size", "dataset", "sampler"))
    if not (sized and getattr(data_loader, "drop_last", False)):
        return "data_loader: the data loader gives no batch; check data_loader.args and the data"
    n_samples = len(data_loader.dataset)
    held = f"the {n_samples} samples the data loader holds"
    if world_size() > 1:  # each process gets its share of the samples
        share = len(data_loader.sampler)
        held = f"the {share} samples each of {world_size()} processes gets (of {n_samples})"
    return (
        f"data_loader.args.batch_size: {data_loader.batch_size} is more than {held}, and "
        "data_loader.args.drop_last is true, so an epoch has no batch; lower batch_size or "
        "set drop_last to false"
    )
