"""The example zoo: other classifiers for the bundled images, each with its config in config/."""

import torch
from torch import nn

from base import BaseModel
from base.base_model import class_scores


class MLP(BaseModel):
    """The simplest baseline: the image flattened to one vector, one hidden layer.

    It sees no spatial structure, so it shows what the convolutions of LeNet add.
    Returns log-probabilities, so it pairs with `nll_loss` (`log_softmax: false`: logits).
    """

    def __init__(
        self, num_classes: int = 10, in_features: int = 28 * 28, hidden: int = 512,
        dropout: float = 0.5, log_softmax: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.log_softmax = log_softmax
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 28, 28) or (B, 784)
        return class_scores(self.net(x), self.log_softmax)  # (B, num_classes)


class DeepCNN(BaseModel):
    """A deeper CNN than LeNet: three conv/batch-norm/pool stages, then three linear layers
    with dropout between them. Returns log-probabilities, so it pairs with `nll_loss`
    (`log_softmax: false`: logits). Takes images of any size from 24x24 up (28x28 MNIST as it
    is; larger ones are pooled to 3x3).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, dropout: float = 0.3,
                 log_softmax: bool = True) -> None:  # fmt: skip
        super().__init__()
        self.log_softmax = log_softmax
        self.features = nn.Sequential(
            *_conv_stage(in_channels, 32),  # (B, 32, 14, 14)
            *_conv_stage(32, 64),  # (B, 64, 7, 7)
            *_conv_stage(64, 128),  # (B, 128, 3, 3)
            # The identity on 28x28 input; other sizes (32x32, 64x64) are pooled to 3x3 too.
            nn.AdaptiveMaxPool2d(3),  # (B, 128, 3, 3)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (B, 128 * 3 * 3)
            nn.Linear(128 * 3 * 3, 256),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(256, 128),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W), e.g. (B, 1, 28, 28)
        return class_scores(self.classifier(self.features(x)), self.log_softmax)  # (B, classes)


def _conv_stage(in_channels: int, out_channels: int) -> list[nn.Module]:
    """A 3x3 convolution that keeps the size, batch norm, ReLU, then a 2x2 max-pool that halves
    it (rounding down)."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),  # has its own bias, so the convolution needs none
        nn.ReLU(),
        nn.MaxPool2d(2),
    ]


class LSTMClassifier(BaseModel):
    """Reads an image as a sequence, one row of pixels per time step, with a stacked LSTM;
    the last step's output, which has seen every row, is classified.

    Shows a recurrent model in the same template. Returns log-probabilities for `nll_loss`
    (`log_softmax: false`: logits).
    """

    def __init__(
        self, input_size: int = 28, hidden_size: int = 256, num_layers: int = 2,
        dropout: float = 0.2, num_classes: int = 10, log_softmax: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.log_softmax = log_softmax
        # `dropout` applies between stacked layers, not after the last one
        self.lstm = nn.LSTM(
            input_size, hidden_size, num_layers=num_layers, dropout=dropout, batch_first=True
        )
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 28, 28) or (B, 28, 28)
        rows = x.flatten(1, -2)  # (B, 28, 28): 28 time steps of 28 pixels
        outputs, _ = self.lstm(rows)  # (B, 28, hidden_size)
        return class_scores(self.head(outputs[:, -1]), self.log_softmax)  # (B, num_classes)
