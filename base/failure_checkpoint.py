"""A run that fails mid-epoch saves the state from before the failing group of batches."""

from typing import TYPE_CHECKING

from base.epoch_batches import BatchFailed
from base.gradient_updates import NonFiniteLoss
from utils.errors import TrainingFailed, UserCodeFailed

if TYPE_CHECKING:
    from base.base_trainer import BaseTrainer


def save_for_resume(trainer: "BaseTrainer", error: BatchFailed | NonFiniteLoss) -> TrainingFailed:
    """Save the state from before the current group of batches as a step checkpoint (that state
    is whole, and a resumed run replays the group); the error that ends the run, saying where."""
    epoch, batch = trainer.epoch + 1, trainer.batches.batches_done + 1
    trainer.batches.load_position(trainer.group_start)
    saved = trainer.save(f"checkpoint-step{trainer.step}.pth") or "no checkpoint (not rank 0)"
    if isinstance(error, BatchFailed):  # the user's data: the entry script shows its traceback
        return UserCodeFailed(
            f"the data loader raised {error.summary()} at epoch {epoch}, batch {batch} (its "
            f"traceback is above); the last step's state is in {saved}: fix the data, then "
            f"resume with python train.py -r {saved}"
        )
    return TrainingFailed(  # `on_nonfinite: "stop"`
        f"non-finite loss at step {trainer.step + 1} (epoch {epoch}, batch {batch}); the last "
        f"good state is in {saved}. Lower the learning rate, or set trainer.on_nonfinite to "
        "'skip'"
    )
