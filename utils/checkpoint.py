"""Checkpoint files: atomic writes, and loads that accept only tensors and plain data."""

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from utils.errors import UserError

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
)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write `state` so that a crash at any moment leaves the old file at `path` intact.

    The bytes go to a temporary file in the same directory, are flushed to disk, and only
    then renamed over `path` (a rename within one file system is atomic).
    """
    path = Path(path)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint onto the CPU, refusing anything but tensors and plain Python data."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        # A weights-only load runs no code, so any failure means "not a checkpoint of ours".
        message = str(error).strip()
        first_line = message.splitlines()[0] if message else type(error).__name__
        raise UserError(f"checkpoint {path}: not a readable checkpoint ({first_line})") from None
    if not isinstance(state, dict) or any(key not in state for key in CHECKPOINT_KEYS):
        missing = [
            key for key in CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state
        ]
        raise UserError(
            f"checkpoint {path}: not a checkpoint of this template (missing {', '.join(missing)})"
        )
    return state


def load_weights(model: torch.nn.Module, state: dict[str, Any]) -> None:
    """Load a checkpoint's weights into `model`, naming the mismatch if they do not fit."""
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[0]
        raise UserError(
            f"arch.args: the checkpoint's weights do not fit this model ({detail})"
        ) from None
