"""The TensorBoard writer: parameter histograms binned on the device match the parameters."""

from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from logger.tensorboard import TensorboardWriter


def test_parameter_histograms_describe_each_parameter(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 20), nn.Linear(20, 3))
    writer = TensorboardWriter(tmp_path, enabled=True)
    writer.histograms(model, step=7, bins=8)
    writer.close()
    events = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0}).Reload()
    assert set(events.Tags()["histograms"]) == {
        f"parameters/{n}" for n, _ in model.named_parameters()
    }
    for name, parameter in model.named_parameters():
        (event,) = events.Histograms(f"parameters/{name}")
        histogram = event.histogram_value
        values = parameter.detach().double()
        assert event.step == 7
        assert histogram.num == values.numel() == sum(histogram.bucket)
        assert histogram.min == pytest.approx(values.min().item())
        assert histogram.max == pytest.approx(values.max().item())
        assert histogram.sum == pytest.approx(values.sum().item(), abs=1e-5)
        assert histogram.sum_squares == pytest.approx((values**2).sum().item())
        edges = torch.tensor(histogram.bucket_limit, dtype=torch.float64)
        bins = zip([-torch.inf, *edges[:-1]], edges, strict=True)
        expected = [((values > lo) & (values <= hi)).sum().item() for lo, hi in bins]
        # Values exactly on an edge may fall either side of it in float32 binning.
        assert sum(abs(a - b) for a, b in zip(histogram.bucket, expected, strict=True)) <= 2
