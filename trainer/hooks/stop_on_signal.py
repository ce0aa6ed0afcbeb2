"""Ctrl-C, SIGTERM and SIGUSR1 stop the run after the current step, with a resumable checkpoint."""

import logging
import signal
import threading

import torch

from base import BaseTrainer, Hook
from utils.distributed.process_group import all_reduce_sum, is_distributed, is_main_process
from utils.stop_signals import TRAINING_STOP_SIGNALS, Stopped, StopSignals

logger = logging.getLogger(__name__)


class StopOnSignal(Hook):
    """On the first SIGINT, SIGTERM or SIGUSR1, requests a stop at the next step (or epoch)
    boundary; the `Checkpointer` after it then saves, and the run ends with exit code 130,
    143 or 138 (train.py requeues a SLURM job on SIGUSR1). Under torchrun the ranks agree at
    log steps, where they synchronise anyway: all stop if one was signalled, on the signal
    latest in `TRAINING_STOP_SIGNALS` that any of them got (a requeue wins)."""

    def __init__(self) -> None:
        self.signals = StopSignals()

    def before_train(self, trainer: BaseTrainer) -> None:
        # Python runs signal handlers in the main thread only (signal.signal raises elsewhere):
        # a run in another thread (a Ray Tune trial) is stopped by the program that owns it.
        if threading.current_thread() is threading.main_thread():
            self.signals.__enter__()

    def after_train(self, trainer: BaseTrainer) -> None:
        self.signals.__exit__()  # puts back what before_train replaced, if anything

    def after_step(self, trainer: BaseTrainer) -> None:
        if trainer.window is not None or not is_distributed():
            self._check(trainer)

    def after_epoch(self, trainer: BaseTrainer) -> None:
        self._check(trainer)

    def _check(self, trainer: BaseTrainer) -> None:
        received = [float(signum == self.signals.received) for signum in TRAINING_STOP_SIGNALS]
        if is_distributed():  # any rank signalled: all stop, on the same signal
            received = all_reduce_sum(torch.tensor(received, device=trainer.device)).tolist()
        signalled = [s for s, count in zip(TRAINING_STOP_SIGNALS, received, strict=True) if count]
        if signalled:
            signum = signalled[-1]
            if is_main_process():  # (said once, not by every rank)
                logger.warning("%s received: stopping with a checkpoint of step %d (send it "
                               "again to stop at once, without one)", signal.Signals(signum).name,
                               trainer.step)  # fmt: skip
            trainer.request_stop(Stopped(signum))
