"""CUDA paths: skipped where there is no GPU; run them on a GPU machine before a release."""

from pathlib import Path

import pytest
import torch
from conftest import ROOT, load, run_dir, run_script

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_train_on_cuda_and_evaluate(tmp_path: Path, shrunk_overrides: list[str]) -> None:
    """Train with `-d cuda`; the checkpoint loads on a CPU-only reader and test.py runs."""
    config = str(ROOT / "config" / "config.json")
    result = run_script("train.py", "-c", config, "-d", "cuda", *shrunk_overrides, gpus=True)
    assert result.returncode == 0, result.stderr
    models = run_dir(tmp_path / "saved")
    log = tmp_path / "saved" / "log" / "Mnist_LeNet" / models.name / "info.log"
    assert "device cuda:0" in log.read_text()
    checkpoint = load(models / "checkpoint-epoch2.pth")  # map_location="cpu"
    assert all(t.device.type == "cpu" for t in checkpoint["state_dict"].values())
    assert checkpoint["rng"]["cuda"], "CUDA generator states are saved"
    result = run_script("test.py", "-r", str(models / "model_best.pth"), "-d", "cuda", gpus=True)
    assert result.returncode == 0, result.stderr
    assert (models / "test_metrics.json").exists()
