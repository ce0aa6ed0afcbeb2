"""Checkpoint files: atomic writes, and loads that accept only tensors and plain data."""

import errno
import json
import os
import pickle
import re
import secrets
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from utils.checkpoint.fields import check_fields, is_count
from utils.errors import TrainingFailed, UserError, error_summary

CHECKPOINT_KEYS = (
    "arch",
    "epoch",
    "step",
    "state_dict",
    "optimizer",
    "lr_scheduler",
    "scaler",
    "monitor_best",
    "not_improved_count",
    "config",
    "rng",
    "batches_done",
    "progress",
)


CHECKPOINT_NAME = re.compile(r"checkpoint-(epoch|step)([0-9]+)\.pth")  # the names runs write


def numbered_checkpoints(directory: str | Path, kind: str | None = None) -> list[Path]:
    """The regular files in `directory` named as a run names its checkpoints (only `kind`'s,
    "epoch" or "step", if given), lowest number first; anything else (a directory, a
    `checkpoint-step60-backup.pth`) is not the run's own, and is left alone."""
    found = []
    for path in Path(directory).glob("checkpoint-*.pth"):
        match = CHECKPOINT_NAME.fullmatch(path.name)
        if match and (kind is None or match[1] == kind) and path.is_file():
            found.append((int(match[2]), path))
    return [path for _, path in sorted(found)]


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a file so that a crash at any moment leaves the old file at `path` intact.

    `write` fills a temporary file in the same directory, which is flushed to disk and only
    then renamed over `path` (a rename within one file system is atomic). The file gets the
    permissions the user's umask gives (not `mkstemp`'s owner-only 0600), so colleagues
    sharing a cluster can read checkpoints and metrics.
    """
    path = Path(path)
    temp_name = _temp_name(path)
    handle = os.open(temp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # makes the rename itself durable
    finally:
        os.close(directory)


def _temp_name(path: Path) -> Path:
    """A new name beside `path` for the file that becomes `path` (hidden, random, `.tmp`)."""
    return path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write a checkpoint atomically (see `atomic_write`); a full disk or a lost permission
    stops the run with a clear message, the previous checkpoints untouched."""
    try:
        atomic_write(path, lambda file: torch.save(state, file))
    except (OSError, RuntimeError) as error:
        failure = _write_failure(error)
        if isinstance(failure, OSError):
            raise TrainingFailed(
                f"cannot write {path} ({failure.strerror or failure}); the previous checkpoints "
                "are intact: free space (or fix trainer.save_dir), then resume with -r"
            ) from None
        if failure is not error:
            raise failure from None  # Ctrl-C or a second stop signal, as if torch let it by
        raise


def _write_failure(error: OSError | RuntimeError) -> BaseException:
    """What made `torch.save` fail. When a write to the file raises (a full disk's OSError, or
    Ctrl-C), torch's zip writer still closes the archive on the way out, which raises
    `RuntimeError: [enforce fail at inline_container.cc:...] unexpected pos ...` in its place,
    with the real failure as its context. Any other RuntimeError is torch's own, kept."""
    context = error.__context__
    hidden = isinstance(context, OSError) or not isinstance(context, Exception | None)
    return context if isinstance(error, RuntimeError) and hidden else error


def write_json(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON, atomically (config.json, test_metrics.json): written
    before training or after an evaluation, a failure is a `UserError`, not a crash."""
    path = Path(path)
    try:
        atomic_write(path, lambda file: file.write((json.dumps(data, indent=2) + "\n").encode()))
    except OSError as error:
        raise _unwritable(path, error) from None


def check_writable(path: str | Path) -> None:
    """Refuse now (`UserError`) what `write_json` could not write later: `path` is a
    directory, or its directory takes no new file (read-only, no permission, missing). For
    jobs that write only at the end of a long computation, such as test.py's evaluation."""
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        probe = _temp_name(path)  # created as atomic_write would create its temporary file
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        probe.unlink()
    except OSError as error:
        raise _unwritable(path, error) from None


def check_readable_text(path: Path) -> None:
    """Refuse now a text file a resumed run goes on writing (metrics.csv) that cannot be read
    (not UTF-8, a directory in its place), before the run changes anything."""
    if not path.exists():
        return
    try:
        path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        problem = error.strerror if isinstance(error, OSError) else error_summary(error)
        raise UserError(f"{path}: cannot be read as text ({problem}); move it away, and the "
                        "resumed run starts a new one") from None  # fmt: skip


def _unwritable(path: Path, error: OSError) -> UserError:
    if isinstance(error, IsADirectoryError):
        fix = "move that directory out of the way"
    else:
        fix = f"it needs {path.parent} writable, with free space"
    return UserError(f"cannot write {path} ({error.strerror or error}); nothing was written: {fix}")


# What torch's weights-only unpickler says of an object it refuses to build (any other
# unpickling error is damage: an opcode or a string that no pickler writes).
_REFUSED_OBJECT = re.compile(r"global|Can only (create|build)|call reduce", re.IGNORECASE)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint onto the CPU, refusing anything but tensors and plain Python data,
    a file whose bytes changed since it was written (every zip member's CRC is checked: torch
    does not), and fields that do not hold what the template writes (`check_fields`)."""
    path = Path(path)
    if not path.is_file():
        kind = "not a regular file" if path.exists() else "no such file"
        raise UserError(f"checkpoint {path}: {kind}")
    if not zipfile.is_zipfile(path):
        raise UserError(
            f"checkpoint {path}: not a checkpoint (torch.save writes a zip archive; this file "
            "is not one, or is cut short)"
        )
    damage = _damage(path)
    if damage is not None:
        raise UserError(f"checkpoint {path}: damaged ({damage}); use another checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if _REFUSED_OBJECT.search(str(error)):
            raise UserError(
                f"checkpoint {path}: not a readable checkpoint (it holds Python objects other "
                "than tensors and plain data, which could run code when loaded; refused)"
            ) from None
        raise UserError(f"checkpoint {path}: damaged ({_unpickling_detail(error)})") from None
    except Exception as error:
        raise UserError(
            f"checkpoint {path}: not a readable checkpoint (damaged: {error_summary(error)})"
        ) from None
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise UserError(
            f"checkpoint {path}: not a checkpoint of this template (missing {', '.join(missing)})"
        )
    check_fields(state, path)
    return state


def _unpickling_detail(error: pickle.UnpicklingError) -> str:
    """The unpickler's own words, without torch's advice around them (which suggests loading
    with weights_only=False, unsafe for a file of unknown origin)."""
    _, found, detail = str(error).partition("WeightsUnpickler error:")
    lines = detail.strip().splitlines() if found else []
    return f"its pickle is malformed: {lines[0]}" if lines else "its pickle is malformed"


def _damage(path: Path) -> str | None:
    """What is wrong with the zip archive at `path`, if anything: a member whose bytes no
    longer match their CRC (bit rot, a bad copy), or an unreadable archive. Reads the whole
    file once (about 15 ms for 50 MB from the page cache)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as error:  # any failure to read the archive is damage
        return f"its zip archive does not read: {error_summary(error)}"
    return None if bad is None else f"member {bad} fails its CRC check"


def newest_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint of a run directory whose recorded position is furthest (never by file
    times, which a copy or a `touch` changes), and its state. One that does not load is
    reported on stderr and the next one tried; a stray `checkpoint-*.pth` is named, unused."""
    run_dir = Path(run_dir)
    candidates = numbered_checkpoints(run_dir)
    for path in sorted(set(run_dir.glob("checkpoint-*.pth")) - set(candidates)):
        print(f"warning: ignoring {path}: not a checkpoint this template writes "
              f"({_stray_kind(path)})", file=sys.stderr)  # fmt: skip
    ranked = []
    for path in candidates:
        try:
            ranked.append((_position(path), path))
        except UserError as error:
            print(f"warning: skipping {error}", file=sys.stderr)
    for _, path in sorted(ranked, reverse=True):
        try:
            return path, load_checkpoint(path)
        except UserError as error:
            print(f"warning: skipping {error}", file=sys.stderr)
    if candidates:
        raise UserError(
            f"-r {run_dir}: none of its checkpoints is readable (see the warnings above); "
            "resume from an earlier copy, or move them aside to start the run again"
        )
    raise UserError(
        f"-r {run_dir}: no readable checkpoint-*.pth in this directory{runs_in(run_dir)}"
    )


def runs_in(directory: Path) -> str:
    """For a message on a directory without checkpoints: the runs in it, if it is their
    parent (`saved/models/NAME`), the last five written to, newest last ("" if none)."""
    written = {p.name: max(f.stat().st_mtime for f in p.glob("*.pth"))
               for p in directory.iterdir() if p.is_dir() and any(p.glob("*.pth"))}  # fmt: skip
    runs = sorted(written, key=written.get)
    if not runs:
        return ""
    named = ", ".join(runs[-5:]) + (f" and {len(runs) - 5} earlier" if len(runs) > 5 else "")
    return f"; it holds the runs {named}: give one, such as -r {directory / runs[-1]}"


def _position(path: Path) -> tuple[int, int, int]:
    """How far a checkpoint got: (step, epoch, batches into the epoch). Read from its pickle
    alone, its tensors mapped and never read; a file that does not read so is loaded whole,
    which raises its `UserError` (or gives the position after all)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        position = state["step"], state["epoch"], state["batches_done"]
        if all(is_count(value) for value in position):
            return position
    except Exception:  # whatever it is, the whole load below says it properly
        pass
    state = load_checkpoint(path)
    return state["step"], state["epoch"], state["batches_done"]


def _stray_kind(path: Path) -> str:
    if path.is_symlink() and not path.exists():
        return "a link to nothing"
    if path.is_dir():
        return "a directory"
    if not path.is_file():
        return "not a regular file"
    return "its name is not checkpoint-epoch<N>.pth or checkpoint-step<N>.pth"
