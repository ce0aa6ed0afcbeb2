"""The GAN example's two models (config/gan.json, trained by trainer/gan_trainer.py)."""

from typing import Annotated

import torch
from annotated_types import Gt
from torch import nn

from base import BaseModel
from data_loader.mnist5k import MEAN, STD


class Generator(BaseModel):
    """The GAN example's generator: a latent vector to a 28x28 image, by an MLP.

    Pixels come out of a sigmoid in [0, 1] and are then normalised like the data
    (`data_loader/mnist5k.py`), so that real and generated images share one range.
    """

    def __init__(self, latent_dim: Annotated[int, Gt(0)] = 64,
                 hidden: Annotated[int, Gt(0)] = 256) -> None:  # fmt: skip
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

    def __init__(self, hidden: Annotated[int, Gt(0)] = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(28 * 28, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 28, 28)
        return self.net(x).squeeze(1)  # (B,) logits
