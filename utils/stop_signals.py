"""Stopping on SIGINT (Ctrl-C), SIGTERM (what SLURM and Kubernetes send before a kill) and, in
training, SIGUSR1 (what SLURM sends before the time limit with `sbatch --signal=USR1@90`).

The first signal only sets a flag: the trainer finishes its step, writes a resumable
checkpoint and raises `Stopped`, which the entry script turns into exit code 130 (SIGINT), 143
(SIGTERM) or 138 (SIGUSR1, after asking SLURM to requeue the job). A second signal raises
`Stopped` wherever the program is; a checkpoint being written is abandoned (its temporary file
removed). Outside training (importing torch, building the run, after it) nothing would save:
there the entry scripts' `exit_on_stop_signals` ends the program at once.
"""

import os
import signal
import sys
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
REQUEUE_SIGNAL = signal.SIGUSR1  # SLURM's warning before the time limit: save, requeue, exit
TRAINING_STOP_SIGNALS = (*STOP_SIGNALS, REQUEUE_SIGNAL)


class Stopped(BaseException):
    """The run stopped on a signal; `exit_code` is 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


class StopSignals:
    """While entered, remembers the first stop signal in `received` (None until then)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        for signum in TRAINING_STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            # After a stop the run has saved and is ending: a further signal ends the
            # process at once and quietly, as a second signal does inside the loop.
            signal.signal(signum, handler if self.received is None else signal.SIG_DFL)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            raise Stopped(signum)
        self.received = signum  # logged by whoever reads it: logging here could reenter a
        # handler's write that the signal interrupted (a "reentrant call" logging error)


def exit_on_stop_signals(
    when: str, at_once: bool = False, signals: tuple[int, ...] = STOP_SIGNALS
) -> None:
    """From now on, one of `signals` ends the program: one line on stderr, `stopped by
    SIGTERM <when>`, and exit code 128 + the signal number.

    Entry scripts call it first with `at_once`, before importing torch (seconds): `at_once`
    exits without unwinding, as an exception raised inside a C extension's import (numpy's,
    torch's) can be swallowed there or abort the process, and nothing is being written yet.
    Once imported, they call it again without: the exit unwinds like `sys.exit`, so `finally`
    blocks run and a file being written atomically is abandoned without a trace; a second
    signal meanwhile kills at once. The trainer's `StopSignals` replaces it while it trains.
    """

    def stop(signum: int, frame: FrameType | None) -> None:
        for each in signals:
            signal.signal(each, signal.SIG_DFL)
        print(f"stopped by {signal.Signals(signum).name} {when}", file=sys.stderr, flush=True)
        if at_once:
            os._exit(128 + signum)
        raise SystemExit(128 + signum)

    for signum in signals:
        signal.signal(signum, stop)


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """For DataLoader workers: leave stopping to the main process, which saves first (SLURM
    signals every process of a job step, the workers too)."""
    for signum in TRAINING_STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
