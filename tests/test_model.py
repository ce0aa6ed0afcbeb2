"""base/base_model.py, model/ and base/metric_tracker.py."""

import pytest
import torch
from torch import nn

from base import BaseModel
from base.metric_tracker import MetricTracker
from model.loss import multilabel_bce
from model.metric import accuracy, top_k_acc
from model.model import LeNet

# ---------------------------------------------------------------- BaseModel


def test_base_model_without_forward_cannot_be_instantiated():
    class NoForward(BaseModel):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(2, 2)

    with pytest.raises(TypeError):
        NoForward()


class PartlyFrozen(BaseModel):
    def __init__(self):
        super().__init__()
        self.trained = nn.Linear(3, 2)  # 3*2 + 2 = 8 parameters
        self.frozen = nn.Linear(3, 1)  # 4 parameters, not trained
        self.frozen.requires_grad_(False)

    def forward(self, x):
        return self.trained(x) + self.frozen(x)


def test_trainable_parameter_count_skips_frozen():
    model = PartlyFrozen()
    assert model.num_trainable_parameters() == 8
    assert "Trainable parameters: 8" in str(model)
    assert model(torch.zeros(5, 3)).shape == (5, 2)


def test_lenet_str_contains_trainable_parameter_count():
    model = LeNet()
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert model.num_trainable_parameters() == count
    text = str(model)
    assert f"{count:,}" in text or str(count) in text
    assert "Conv2d" in text  # still the usual module listing


@pytest.mark.parametrize("num_classes", [10, 3])
def test_lenet_outputs_log_probabilities(num_classes):
    torch.manual_seed(0)
    model = LeNet(num_classes=num_classes).eval()
    images = torch.randn(4, 1, 28, 28)  # (B, C, H, W)
    output = model(images)
    assert output.shape == (4, num_classes)
    assert torch.allclose(output.exp().sum(dim=1), torch.ones(4), atol=1e-5)
    assert (output <= 0).all()
    model.log_softmax = False  # (`arch.args.log_softmax: false`): the logits themselves
    logits = model(images)
    assert (logits > 0).any() and torch.allclose(logits.log_softmax(dim=1), output, atol=1e-6)


def test_lenet_trains_with_dropout_and_batch_norm():
    torch.manual_seed(0)
    model = LeNet().train()
    output = model(torch.randn(8, 1, 28, 28))
    output.sum().backward()
    assert output.shape == (8, 10)
    assert model.conv1.weight.grad is not None


# ---------------------------------------------------------------- metrics

# (4, 3) scores; the ranks of the target in each row are 1, 2, 3, 1.
OUTPUT = torch.tensor(
    [
        [0.7, 0.2, 0.1],
        [0.5, 0.3, 0.2],
        [0.6, 0.3, 0.1],
        [0.1, 0.1, 0.8],
    ]
)
TARGET = torch.tensor([0, 1, 2, 2])


def test_accuracy():
    result = accuracy(OUTPUT, TARGET)
    assert result.dim() == 0
    assert result.item() == pytest.approx(0.5)
    assert accuracy(OUTPUT, torch.tensor([1, 2, 1, 0])).item() == 0.0
    assert accuracy(OUTPUT, torch.tensor([0, 0, 0, 2])).item() == 1.0


@pytest.mark.parametrize(("k", "expected"), [(1, 0.5), (2, 0.75), (3, 1.0), (5, 1.0), (100, 1.0)])
def test_top_k_acc(k, expected):
    result = top_k_acc(OUTPUT, TARGET, k=k)
    assert result.dim() == 0
    assert result.item() == pytest.approx(expected)


def test_top_k_acc_default_k_is_three():
    output = torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1]])
    assert top_k_acc(output, torch.tensor([2, 3])).item() == pytest.approx(0.5)


def test_top_1_equals_accuracy():
    torch.manual_seed(0)
    output = torch.randn(64, 10)
    target = torch.randint(0, 10, (64,))
    assert top_k_acc(output, target, k=1).item() == pytest.approx(accuracy(output, target).item())


# ---------------------------------------------------------------- MetricTracker


def test_metric_tracker_weighted_means():
    tracker = MetricTracker()
    tracker.update("loss", torch.tensor(1.0), n=3)
    tracker.update("loss", torch.tensor(2.0), n=1)
    tracker.update("accuracy", torch.tensor(0.5))
    tracker.update("accuracy", torch.tensor(1.0))
    result = tracker.result()
    assert result == {"loss": pytest.approx(1.25), "accuracy": pytest.approx(0.75)}
    assert all(type(value) is float for value in result.values())


def test_metric_tracker_reset():
    tracker = MetricTracker()
    tracker.update("loss", torch.tensor(5.0), n=4)
    tracker.reset()
    assert tracker.result() == {}
    tracker.update("loss", torch.tensor(1.0), n=2)
    assert tracker.result() == {"loss": pytest.approx(1.0)}


def test_metric_tracker_keeps_the_names_a_step_returns_in_their_order():
    """A trainer logs whatever names its step returns: no list of names is declared first."""
    tracker = MetricTracker()
    tracker.update_all({"g_loss": torch.tensor(2.0), "d_loss": torch.tensor(1.0)}, n=2)
    assert list(tracker.flush()) == ["g_loss", "d_loss"]
    tracker.update_all({"g_loss": torch.tensor(4.0), "d_loss": 3.0}, n=2)
    assert tracker.result() == {"g_loss": pytest.approx(3.0), "d_loss": pytest.approx(2.0)}


def test_multilabel_bce_takes_the_integer_targets_the_multilabel_metrics_want() -> None:
    """Multi-hot int64 targets: torchmetrics' multilabel metrics refuse floats, and
    `BCEWithLogitsLoss` integers; `multilabel_bce` takes them as they are."""
    from torchmetrics.classification import MultilabelAveragePrecision

    torch.manual_seed(0)
    logits, target = torch.randn(6, 4), torch.randint(0, 2, (6, 4))  # (B, L), 0s and 1s
    expected = nn.BCEWithLogitsLoss()(logits, target.float())
    assert torch.equal(multilabel_bce(logits, target), expected)
    metric = MultilabelAveragePrecision(num_labels=4)
    metric.update(logits, target)  # the same target
    assert 0 < metric.compute() <= 1
