"""The default example's model. A config's `arch.type` names a model class defined in any
module of `model/` (add a file there for models of your own)."""

import torch
import torch.nn.functional as F
from torch import nn

from base import BaseModel
from base.base_model import class_scores


class LeNet(BaseModel):
    """A LeNet-style CNN for 28x28 images: two conv/pool stages (`width` and twice `width`
    channels), then two linear layers.

    Returns log-probabilities, so it pairs with `nll_loss`; with `log_softmax: false`, logits
    (for `cross_entropy`, or `BCEWithLogitsLoss` when an image has several labels).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, dropout: float = 0.25,
                 width: int = 32, log_softmax: bool = True) -> None:  # fmt: skip
        super().__init__()
        self.log_softmax = log_softmax
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(width, 2 * width, kernel_size=5)
        self.bn1 = nn.BatchNorm2d(width)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.fc1 = nn.Linear(2 * width * 5 * 5, 256)
        self.fc2 = nn.Linear(256, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, 28, 28)
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)  # (B, 32, 14, 14)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)  # (B, 64, 5, 5)
        x = self.dropout(F.relu(self.fc1(x.flatten(1))))  # (B, 256)
        return class_scores(self.fc2(x), self.log_softmax)  # (B, num_classes)
