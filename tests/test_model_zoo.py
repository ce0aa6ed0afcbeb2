"""The example models in model/zoo.py and their shipped configs: shapes, structure, that each
one learns, and that each config trains and evaluates through the entry scripts."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, run_dir, run_script, shrunk
from torch import nn

from data_loader.mnist5k import load_mnist5k
from model.model import LeNet
from model.zoo import MLP, DeepCNN, LSTMClassifier

MODELS = [LeNet, MLP, DeepCNN, LSTMClassifier]
ZOO_CONFIGS = ["config.json", "mlp.json", "deep_cnn.json", "lstm.json"]


@pytest.fixture(scope="module")
def mnist_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """20 real training images (20, 1, 28, 28), the first two of each digit, and their labels
    (20,). (The split is ordered by digit: its first 20 images would all be zeros.)"""
    images, labels = load_mnist5k(ROOT / "data", training=True).tensors
    chosen = torch.cat([torch.nonzero(labels == digit).flatten()[:2] for digit in range(10)])
    return images[chosen], labels[chosen]


# ---------------------------------------------------------------- every model


@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("num_classes", [10, 3])
def test_outputs_log_probabilities(model_class, num_classes: int) -> None:
    torch.manual_seed(0)
    model = model_class(num_classes=num_classes).eval()
    inputs = torch.randn(5, 1, 28, 28)  # (B, C, H, W)
    output = model(inputs)
    assert output.shape == (5, num_classes)
    assert torch.allclose(output.exp().sum(dim=1), torch.ones(5), atol=1e-5)
    torch.manual_seed(0)  # the same weights, and the logits (multi-label tagging, regression)
    logits = model_class(num_classes=num_classes, log_softmax=False).eval()(inputs)
    assert (logits > 0).any() and torch.allclose(logits.log_softmax(dim=1), output, atol=1e-6)
    assert (output <= 0).all()


@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.__name__)
def test_overfits_one_batch(model_class, mnist_batch) -> None:
    """A model that can learn drives the loss on one fixed batch far below where it started."""
    torch.manual_seed(0)
    images, labels = mnist_batch
    model = model_class().train()  # dropout and batch norm as in training
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = F.nll_loss(model(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 2.0  # near ln(10) = 2.3: guessing among ten balanced classes
    assert losses[-1] < 0.1, losses


# ---------------------------------------------------------------- each model's structure


def count(model: nn.Module, module_type: type[nn.Module]) -> int:
    return sum(isinstance(module, module_type) for module in model.modules())


def test_mlp_has_one_hidden_layer_and_takes_flat_input() -> None:
    model = MLP(hidden=64, dropout=0.3).eval()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 64), (64, 10)]
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3]
    images = torch.randn(4, 1, 28, 28)
    assert torch.equal(model(images), model(images.flatten(1)))  # (B, 784) is the same input


def test_deep_cnn_has_three_convolutions_three_linear_layers_batch_norm_and_dropout() -> None:
    model = DeepCNN(dropout=0.4)
    assert count(model, nn.Conv2d) == 3
    assert count(model, nn.Linear) == 3
    assert count(model, nn.BatchNorm2d) == 3  # one after each convolution
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(m.p == 0.4 for m in dropouts)


def test_deep_cnn_takes_other_channel_counts_and_image_sizes() -> None:
    model = DeepCNN(in_channels=3, num_classes=4).eval()
    for size in (24, 28, 32, 64):
        assert model(torch.randn(2, 3, size, size)).shape == (2, 4)


def test_lstm_reads_28_rows_of_28_pixels() -> None:
    model = LSTMClassifier().eval()
    lstm = model.lstm
    assert (lstm.num_layers, lstm.hidden_size, lstm.dropout) == (2, 256, 0.2)
    assert lstm.batch_first
    assert lstm.weight_ih_l0.shape == (4 * 256, 28)  # 4 gates x hidden, per input feature
    assert lstm.weight_ih_l1.shape == (4 * 256, 256)  # the second layer reads the first
    seen = []
    lstm.register_forward_hook(lambda module, inputs, outputs: seen.append(inputs[0].shape))
    model(torch.randn(3, 1, 28, 28))
    assert seen == [(3, 28, 28)]  # (B, time steps, features per step)


def test_lstm_takes_images_with_or_without_a_channel_dimension() -> None:
    torch.manual_seed(0)
    model = LSTMClassifier().eval()
    images = torch.randn(3, 1, 28, 28)
    with_channel = model(images)
    assert with_channel.shape == (3, 10)
    assert torch.equal(with_channel, model(images.squeeze(1)))  # (B, 28, 28)


def test_lstm_arguments_reach_the_lstm() -> None:
    model = LSTMClassifier(input_size=14, hidden_size=32, num_layers=3, dropout=0.1, num_classes=5)
    assert (model.lstm.input_size, model.lstm.hidden_size) == (14, 32)
    assert (model.lstm.num_layers, model.lstm.dropout) == (3, 0.1)
    assert model.eval()(torch.randn(2, 56, 14)).shape == (2, 5)  # 56 steps of 14 features


# ---------------------------------------------------------------- the shipped configs


@pytest.mark.slow
@pytest.mark.parametrize("config_name", ZOO_CONFIGS)
def test_config_trains_and_evaluates(config_name: str, tmp_path: Path) -> None:
    """The shipped config, shrunk to 2 epochs of 3 batches, trains through `train.py`; then
    `test.py` evaluates the run's best checkpoint on the test split."""
    config_path = ROOT / "config" / config_name
    save_dir = tmp_path / "saved"
    trained = run_script("train.py", "-c", str(config_path), *shrunk(save_dir))
    assert trained.returncode == 0, trained.stderr
    models = run_dir(save_dir, json.loads(config_path.read_text())["name"])
    assert (models / "checkpoint-epoch2.pth").is_file()
    assert (models / "model_best.pth").is_file()

    tested = run_script("test.py", "-r", str(models))
    assert tested.returncode == 0, tested.stderr
    metrics = json.loads((models / "model_best.test_metrics.json").read_text())
    assert metrics["n_samples"] == 1000  # the held-out test split
    assert 0.0 <= metrics["accuracy"] <= 1.0
