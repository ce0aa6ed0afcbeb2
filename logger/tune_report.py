"""A search trial's epochs, reported to Ray Tune. Only tune.py imports this module: it needs Ray."""

from typing import Any

import ray.tune

from base import BaseTrainer, Hook


class TuneReport(Hook):
    """Reports every epoch to Ray Tune, whose scheduler may then stop the trial (ASHA).

    It comes last in the hook list, so the epoch's checkpoint is written before Ray hears of
    the epoch. A stop from Ray ends the run as any hook's stop does (its checkpoints stay).
    The run's last epoch is kept in `final`, for tune.py to report once the run has ended
    cleanly: Ray ends a trial's process soon after its last result.
    """

    def __init__(self, best_key: str) -> None:
        self.best_key = best_key
        self.final: dict[str, Any] | None = None

    def after_epoch(self, trainer: BaseTrainer) -> None:
        # `epoch` is ASHA's time: it goes on counting in a resumed trial, where Ray's own
        # iteration count starts again. The best so far is restored on resume too.
        best = float(trainer.monitor.best)
        result = {**trainer.epoch_log, "epoch": trainer.epoch, self.best_key: best}
        if trainer.stop_requested or trainer.epoch == trainer.epochs:
            self.final = result
            return
        try:
            ray.tune.report(result)
        except SystemExit:  # how Ray tells the reporting thread that the trial is stopped
            trainer.request_stop()
