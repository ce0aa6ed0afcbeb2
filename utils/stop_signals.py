"""Stopping on SIGINT (Ctrl-C) and SIGTERM (what SLURM and Kubernetes send before a kill).

The first signal only sets a flag: the trainer finishes the step it is in, writes a
resumable checkpoint and raises `Stopped`, which the entry script turns into exit code
130 (SIGINT) or 143 (SIGTERM). A second signal stops at once by raising `Stopped` wherever
the program is; a checkpoint being written is then abandoned, and its temporary file
removed, so the previous checkpoints are all that is left.
"""

import logging
import signal
from types import FrameType

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """The run stopped on a signal; `exit_code` is 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum


class StopSignals:
    """While entered, remembers the first stop signal in `received` (None until then)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            raise Stopped(signum)
        self.received = signum
        logger.warning(
            "%s received: stopping after this step with a checkpoint (send it again to stop "
            "at once, without one)",
            signal.Signals(signum).name,
        )


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """For DataLoader workers: leave stopping to the main process, which saves first."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
