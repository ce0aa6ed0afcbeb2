"""Shared fixtures: the shipped config shrunk to a few CPU batches, and a CLI runner."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def shrunk_overrides(tmp_path: Path) -> list[str]:
    """`-o` arguments that shrink the shipped config to 2 epochs of 3 batches, outputs in tmp."""
    return [
        "-o", f"trainer.save_dir={tmp_path / 'saved'}",
        "-o", "trainer.epochs=2",
        "-o", "trainer.len_epoch=3",
        "-o", "trainer.save_period=1",
        "-o", f"data_loader.args.data_dir={ROOT / 'data'}",
        "-o", "data_loader.args.batch_size=32",
    ]  # fmt: skip


def run_script(
    script: str, *args: str, cwd: Path = ROOT, gpus: bool = False
) -> subprocess.CompletedProcess:
    """Run one of the entry scripts the way a user would; on the CPU unless `gpus`."""
    env = dict(os.environ) if gpus else {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, script, *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def run_dir(save_dir: Path, name: str = "Mnist_LeNet") -> Path:
    """The one run directory under `save_dir/models/name`."""
    (found,) = (save_dir / "models" / name).iterdir()
    return found


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())
