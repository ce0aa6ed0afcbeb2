"""The GAN example: a trainer of two models, each with its own optimizer and loss."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from base import BaseTrainer


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Hold `model`'s trainable parameters out of autograd, so that a loss computed through
    it leaves no gradients in them; they are trainable again afterwards."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)


class GANTrainer(BaseTrainer):
    """Trains `generator` against `discriminator` on batches of `(images, labels)`.

    Each step first teaches the discriminator to tell real images (target 1) from generated
    ones (target 0), then teaches the generator to make the discriminator say 1. `criterion`
    takes logits and targets (`BCEWithLogitsLoss`). Logs both losses and the discriminator's
    mean probability of "real" on real (`d_real`) and on generated (`d_fake`) images.
    The labels are not used; there is no validation (a GAN has no held-out loss to watch).
    """

    model_names = ("generator", "discriminator")

    def __init__(self, *args: Any, criterion: Callable, **kwargs: Any) -> None:
        self.criterion = criterion
        super().__init__(*args, **kwargs)
        self.generator = self.models["generator"]  # wrapped for DDP or compile, when asked
        self.discriminator = self.models["discriminator"]
        self.latent_dim: int = self.bare_models["generator"].latent_dim

    def logged_names(self) -> list[str]:
        return ["d_loss", "g_loss", "d_real", "d_fake"]

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        real, _ = batch  # (B, 1, 28, 28); the labels are not used
        n = real.shape[0]
        # The global generator draws the noise: checkpoints save it, so resume is exact.
        noise = torch.randn(n, self.latent_dim, device=self.device)  # (B, latent_dim)
        is_real = torch.cat([torch.ones(n, device=self.device), torch.zeros(n, device=self.device)])

        # Discriminator: one forward over real and generated images (one pass for DDP).
        # `detach` keeps this loss's gradients out of the generator.
        with self.updates.autocast():
            fake = self.generator(noise)  # (B, 1, 28, 28)
            logits = self.discriminator(torch.cat([real, fake.detach()]))  # (2B,)
            d_loss = self.criterion(logits, is_real)
        self.updates.backward(d_loss)
        self.updates.step(self.optimizers["discriminator"])

        # Generator: make the discriminator (updated, at a group's end) call its images real. The
        # discriminator is frozen so this loss leaves no gradients in it; the bare module is
        # called because it takes no gradients, so DDP has nothing to synchronise for it.
        discriminator = self.bare_models["discriminator"]
        with frozen(discriminator):
            with self.updates.autocast():
                g_loss = self.criterion(discriminator(fake), is_real[:n])
            self.updates.backward(g_loss)
        self.updates.step(self.optimizers["generator"])

        probabilities = torch.sigmoid(logits.detach().float())  # (2B,)
        return {
            "d_loss": d_loss.detach(),
            "g_loss": g_loss.detach(),
            "d_real": probabilities[:n].mean(),
            "d_fake": probabilities[n:].mean(),
        }
