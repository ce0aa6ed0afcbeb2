"""The models a config can name in `arch.type`."""

import torch
import torch.nn.functional as F
from torch import nn

from base import BaseModel
from data_loader.mnist5k import MEAN, STD


class LeNet(BaseModel):
    """A LeNet-style CNN for 28x28 images: two conv/pool stages, then two linear layers.

    Returns log-probabilities, so it pairs with `nll_loss`.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, dropout: float = 0.25) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5)
        self.bn1 = nn.BatchNorm2d(32)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc1 = nn.Linear(64 * 5 * 5, 256)
        self.fc2 = nn.Linear(256, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, 28, 28)
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)  # (B, 32, 14, 14)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)  # (B, 64, 5, 5)
        x = self.dropout(F.relu(self.fc1(x.flatten(1))))  # (B, 256)
        return F.log_softmax(self.fc2(x), dim=1)  # (B, num_classes)


class Generator(BaseModel):
    """The GAN example's generator: a latent vector to a 28x28 image, by an MLP.

    Pixels come out of a sigmoid in [0, 1] and are then normalised like the data
    (`data_loader/mnist5k.py`), so that real and generated images share one range.
    """

    def __init__(self, latent_dim: int = 64, hidden: int = 256) -> None:
        super().__init__()
        self.latent_dim = latent_dim  # the trainer and the sample hook draw noise of this size
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 28 * 28),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # z: (B, latent_dim)
        pixels = torch.sigmoid(self.net(z)).view(-1, 1, 28, 28)  # (B, 1, 28, 28) in [0, 1]
        return (pixels - MEAN) / STD  # (B, 1, 28, 28), normalised like the data


class Discriminator(BaseModel):
    """The GAN example's discriminator: a 28x28 image to one logit, real (> 0) or generated."""

    def __init__(self, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(28 * 28, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 28, 28)
        return self.net(x).squeeze(1)  # (B,) logits
