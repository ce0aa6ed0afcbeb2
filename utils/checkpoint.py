"""Checkpoint files: atomic writes, and loads that accept only tensors and plain data."""

import json
import os
import pickle
import secrets
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from utils.errors import TrainingFailed, UserError

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


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a file so that a crash at any moment leaves the old file at `path` intact.

    `write` fills a temporary file in the same directory, which is flushed to disk and only
    then renamed over `path` (a rename within one file system is atomic). The file gets the
    permissions the user's umask gives (not `mkstemp`'s owner-only 0600), so colleagues
    sharing a cluster can read checkpoints and metrics.
    """
    path = Path(path)
    temp_name = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
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


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write a checkpoint atomically (see `atomic_write`); a full disk or a lost permission
    stops the run with a clear message, the previous checkpoints untouched."""
    try:
        atomic_write(path, lambda file: torch.save(state, file))
    except OSError as error:
        raise TrainingFailed(
            f"cannot write {path} ({error.strerror or error}); the previous checkpoints are "
            "intact: free space (or fix trainer.save_dir), then resume with -r"
        ) from None


def write_json(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON, atomically (config.json, test_metrics.json)."""
    atomic_write(path, lambda file: file.write((json.dumps(data, indent=2) + "\n").encode()))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint onto the CPU, refusing anything but tensors and plain Python data."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path}: no such file")
    if not zipfile.is_zipfile(path):
        raise UserError(
            f"checkpoint {path}: not a checkpoint (torch.save writes a zip archive; this file "
            "is not one, or is cut short)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(
            f"checkpoint {path}: not a readable checkpoint (it holds Python objects other "
            "than tensors and plain data, which could run code when loaded; refused)"
        ) from None
    except Exception as error:
        message = str(error).strip()
        first_line = message.splitlines()[0] if message else type(error).__name__
        raise UserError(
            f"checkpoint {path}: not a readable checkpoint (damaged: {first_line})"
        ) from None
    if not isinstance(state, dict) or any(key not in state for key in CHECKPOINT_KEYS):
        missing = [
            key for key in CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state
        ]
        raise UserError(
            f"checkpoint {path}: not a checkpoint of this template (missing {', '.join(missing)})"
        )
    return state


def load_weights(model: torch.nn.Module, weights: dict[str, Any]) -> None:
    """Load a state dict of weights into `model`, naming the mismatch if they do not fit."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[0]
        raise UserError(
            f"arch.args: the checkpoint's weights do not fit this model ({detail})"
        ) from None


def newest_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint in a run directory that loads, and its state.

    Periodic (`checkpoint-epoch<N>.pth`) and step (`checkpoint-step<N>.pth`) checkpoints are
    tried newest first (by the time they were written); one that is truncated or corrupt is
    reported on stderr by name and the one before it is used.
    """
    run_dir = Path(run_dir)
    candidates = sorted(
        run_dir.glob("checkpoint-*.pth"), key=lambda p: p.stat().st_mtime_ns, reverse=True
    )
    for path in candidates:
        try:
            return path, load_checkpoint(path)
        except UserError as error:
            print(f"warning: skipping {error}", file=sys.stderr)
    raise UserError(f"-r {run_dir}: no readable checkpoint-*.pth in this directory")
