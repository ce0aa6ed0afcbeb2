"""CUDA paths: skipped where there is no GPU; run them on a GPU machine before a release."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, load, run_dir, run_script

from model.model import LeNet

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CONFIG = str(ROOT / "config" / "config.json")


def test_train_on_cuda_and_evaluate(tmp_path: Path, shrunk_overrides: list[str]) -> None:
    """Train with `-d cuda`; the checkpoint loads on a CPU-only reader and test.py runs."""
    result = run_script("train.py", "-c", CONFIG, "-d", "cuda", *shrunk_overrides, gpus=True)
    assert result.returncode == 0, result.stderr
    models = run_dir(tmp_path / "saved")
    log = tmp_path / "saved" / "log" / "Mnist_LeNet" / models.name / "info.log"
    assert "device cuda:0" in log.read_text()
    checkpoint = load(models / "checkpoint-epoch2.pth")  # map_location="cpu"
    assert all(t.device.type == "cpu" for t in checkpoint["state_dict"].values())
    assert checkpoint["rng"]["cuda"], "CUDA generator states are saved"
    result = run_script("test.py", "-r", str(models / "model_best.pth"), "-d", "cuda", gpus=True)
    assert result.returncode == 0, result.stderr
    assert (models / "model_best.test_metrics.json").exists()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_on_cuda(tmp_path: Path, shrunk_overrides: list[str], amp: str) -> None:
    """bf16 and fp16 train; fp16's scaler is checkpointed and a resumed run carries it on."""
    options = [*shrunk_overrides, "-o", f"trainer.amp={amp}", "-o", "trainer.channels_last=true"]
    result = run_script("train.py", "-c", CONFIG, "-d", "cuda", *options, gpus=True)
    assert result.returncode == 0, result.stderr
    models = run_dir(tmp_path / "saved")
    checkpoint = load(models / "checkpoint-epoch1.pth")
    if amp == "fp16":
        assert checkpoint["scaler"]["scale"] > 0
    else:
        assert checkpoint["scaler"] is None
    resume = ["-r", str(models / "checkpoint-epoch1.pth"), "-d", "cuda"]
    result = run_script("train.py", *resume, *options, "-o", "trainer.epochs=3", gpus=True)
    assert result.returncode == 0, result.stderr
    final = load(models / "checkpoint-epoch3.pth")
    assert all(torch.isfinite(t).all() for t in final["state_dict"].values())
    if amp == "fp16":
        # Three more steps of growth tracking since epoch 1 (no overflow at these scales).
        grown = final["scaler"]["_growth_tracker"] - checkpoint["scaler"]["_growth_tracker"]
        assert grown == 6


def test_compile_and_device_resident_loader_on_cuda(tmp_path, shrunk_overrides) -> None:
    """config/fast.json with compile on CUDA; the checkpoint loads into a plain LeNet."""
    options = [*shrunk_overrides, "-o", "trainer.compile=true", "-o", "trainer.amp=bf16"]
    fast = str(ROOT / "config" / "fast.json")
    result = run_script("train.py", "-c", fast, "-d", "cuda", *options, gpus=True)
    assert result.returncode == 0, result.stderr
    models = run_dir(tmp_path / "saved", "Mnist_LeNet_fast")
    state = load(models / "checkpoint-epoch2.pth")["state_dict"]
    assert not [k for k in state if k.startswith(("_orig_mod.", "module."))]
    LeNet().load_state_dict(state)


def test_device_resident_loader_keeps_batches_on_the_gpu() -> None:
    from data_loader.data_loaders import Mnist5kTensorDataLoader

    device = torch.device("cuda", 0)
    loader = Mnist5kTensorDataLoader(str(ROOT / "data"), 64, validation_split=0.1,
                                     device_resident=True, device=device)  # fmt: skip
    images, labels = next(iter(loader))
    assert images.device == device and labels.device == device
    assert next(iter(loader.split_validation()))[0].device == device
    pinned = Mnist5kTensorDataLoader(str(ROOT / "data"), 64, device=device)
    images, _ = next(iter(pinned))
    assert images.device.type == "cpu" and images.is_pinned()


def test_ddp_with_nccl_at_world_size_one(tmp_path: Path, shrunk_overrides: list[str]) -> None:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    command = [*launcher, "train.py", "-c", CONFIG, "-d", "cuda", *shrunk_overrides]
    result = subprocess.run(command, cwd=ROOT, env=dict(os.environ), capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    models = run_dir(tmp_path / "saved")
    log = tmp_path / "saved" / "log" / "Mnist_LeNet" / models.name / "info.log"
    assert "DDP world size 1" in log.read_text() and "device cuda:0" in log.read_text()
    assert load(models / "checkpoint-epoch2.pth")["step"] == 6
