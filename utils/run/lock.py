"""One process per run directory (and per search directory): a lock held for its life.

Two processes resuming one run (a job started twice) would interleave their checkpoints and
logs; two resuming one search would train its trials twice. The lock is an `flock` on
`<run>/train.lock` (`<search>/search.lock`), which the kernel releases when the holder ends
in any way (`kill -9` too): no stale lock to guess about. The file, which stays, names the
holder for the error message of the process that finds it taken; only a held lock counts.
"""

import fcntl
import json
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import IO

from utils.errors import UserError

_held: list[IO] = []  # open lock files: the lock lasts as long as the process


def lock_run_dir(models: Path) -> None:
    """Take the run directory `models` for this process, or raise `UserError` naming the
    process that holds it."""
    lock_directory(models, "train.lock", "run directory", "two processes must not train one run")


def lock_directory(directory: Path, lock_name: str, kind: str, rule: str) -> None:
    """Take `directory` (a `kind`, for the messages) for this process with its file
    `lock_name`, or raise `UserError` naming the holder and the `rule` it would break."""
    path = directory / lock_name
    try:
        file = open(path, "a+")  # noqa: SIM115 (held open until the process ends)
    except OSError as error:
        raise UserError(
            f"{kind} {directory}: cannot create {lock_name} ({error.strerror}); it needs a "
            "writable directory"
        ) from None
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        file.seek(0)
        holder = _describe(file.read())
        file.close()
        raise UserError(
            f"{kind} {directory} is in use by {holder} (lock {path}); {rule}: wait for it to "
            "end, or stop it"
        ) from None
    file.seek(0)
    file.truncate()
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.now().isoformat(timespec="seconds")}  # fmt: skip
    file.write(json.dumps(holder) + "\n")
    file.flush()
    _held.append(file)


def _describe(text: str) -> str:
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on host {holder['host']} (since {holder['started']})"
    except (ValueError, TypeError, KeyError):
        return "another process"
