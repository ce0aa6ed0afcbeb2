"""The Ray processes of a search: checked before anything is written, started (or joined),
and stopped by SIGTERM as by Ctrl-C, so that tune.py keeps train.py's contract: one line,
exit code 128 + the signal, and a search that resumes."""

import importlib
import logging
import os
import signal
import socket
import sys
import threading
from types import FrameType
from typing import Any

import torch

from utils.errors import UserError, first_line
from utils.search.space import Search
from utils.stop_signals import STOP_SIGNALS, Stopped

RESUMES = "(the search resumes with the same command and --resume)"
INSTALL_HINT = 'tune.py needs Ray Tune: pip install -e ".[tune]"'


def import_ray() -> Any:
    """`ray`, with Ray Tune, imported without the native crash handler Ray installs for
    SIGTERM as well (`RAY_DISABLE_FAILURE_SIGNAL_HANDLER`, read on import; unless set): a
    stop signal while Ray starts would meet it, and it dumps a stack and aborts."""
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    try:
        import ray
        import ray.tune
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return ray


def check_machine(search: Search, address: str | None, source: str = "--address") -> None:
    """Refuse, before anything is written, a search that could not start: trials that need
    more than this machine has (without `address`), or a cluster `address` where nothing
    listens (Ray would retry for minutes). "auto" is left to Ray, which says at once when it
    finds no cluster. `source` names where the address came from, for the messages."""
    if address is None:
        cpus = os.cpu_count() or 1
        wanted = search.resources_per_trial
        if wanted["cpu"] > cpus or wanted["gpu"] > torch.cuda.device_count():
            raise UserError(
                f"resources_per_trial: {wanted} is more than this machine has ({cpus} CPUs, "
                f"{torch.cuda.device_count()} GPUs); no trial could start"
            )
        return
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(
            f"{source}: {address[:100]!r} is not valid; expected auto, HOST:PORT or ray://HOST:PORT"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as error:
        raise UserError(
            f"{source} {address}: no Ray cluster answers there ({error.strerror or error}); "
            f"start one with `ray start --head`, or leave out {source} to run on this machine"
        ) from None


def start_ray(ray: Any, address: str | None, node_ip_address: str | None = None) -> list[int]:
    """Connect to the cluster at `address` (as the node at `node_ip_address`, when given), or
    start a small one here; then SIGINT and SIGTERM stop the search (`stop_search_on_signals`,
    whose list is returned).

    A stop signal while Ray starts must not raise inside it: raised where it lands (a logging
    lock's release, a half-made connection), the exception can be swallowed, and the search
    runs on, or crash the interpreter's exit; so ours waits, and Ray's own (`sys.exit`) is kept
    out. The signal ends the process, with our line, once Ray is up (and shut down), 10 s after
    it came if Ray is still starting (an address that is no Ray cluster), or at a second one."""
    deferred: list[int] = []

    def defer(signum: int, frame: FrameType | None) -> None:
        if deferred:  # a second signal, or Ray still starting 10 s after the first: at once
            _end_at_once(signum)
        deferred.append(signum)
        timer = threading.Timer(10, _end_at_once, (signum,))
        timer.daemon = True
        timer.start()

    for signum in STOP_SIGNALS:
        signal.signal(signum, defer)
    _init_ray(ray, address, node_ip_address)
    if deferred:
        ray.shutdown()
        _end_at_once(deferred[0])
    return stop_search_on_signals()


def _init_ray(ray: Any, address: str | None, node_ip_address: str | None) -> None:
    """`ray.init` for a search, with Ray's own SIGTERM handler passed over (see `start_ray`)."""
    local = {"num_cpus": os.cpu_count() or 1, "object_store_memory": 100 << 20}  # no data
    ray_utils = importlib.import_module("ray._private.utils")
    set_sigterm_handler = ray_utils.set_sigterm_handler
    ray_utils.set_sigterm_handler = lambda handler: None
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,  # each trial's log is its run's info.log
            logging_level=logging.WARNING,
            runtime_env={"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0"}},
            **({} if address else local),
            **({"_node_ip_address": node_ip_address} if node_ip_address else {}),
        )
    except ConnectionError as error:
        raise UserError(f"--address {address}: {first_line(error)}") from None
    finally:
        ray_utils.set_sigterm_handler = set_sigterm_handler


def _end_at_once(signum: int) -> None:
    print(f"stopped by {signal.Signals(signum).name} while Ray started {RESUMES}",
          file=sys.stderr, flush=True)  # fmt: skip
    os._exit(128 + signum)


def stop_search_on_signals() -> list[int]:
    """SIGINT and SIGTERM alike stop the search as Tune's own Ctrl-C does (Tune stops the
    trials, saves the search and `fit` returns; before `fit`, the program ends, unwinding);
    a second signal ends it at once. Tune's handler is reached through SIGUSR1, which `fit`
    sets to it; its SIGINT handler is turned off so that ours stays (and Tune's resume recipe
    for its API is not logged). The returned list gets the signal."""
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # not a handler of an earlier `fit`
    received: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        tune_handler = signal.getsignal(signal.SIGUSR1)
        if received or not callable(tune_handler):
            for each in STOP_SIGNALS:
                signal.signal(each, signal.SIG_DFL)  # a further one kills at once
            raise Stopped(signum)  # unwinding: Ray is shut down on the way out
        received.append(signum)
        logging.getLogger("ray.tune").setLevel(logging.ERROR)
        tune_handler(signal.SIGUSR1, frame)

    for signum in STOP_SIGNALS:
        signal.signal(signum, handle)
    return received
