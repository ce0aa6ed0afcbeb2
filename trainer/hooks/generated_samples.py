"""TensorBoard images of what a GAN's generator makes of one fixed set of noise vectors."""

from typing import Annotated

import torch
from annotated_types import Ge, Le, Lt

from base import BaseTrainer, Hook
from trainer.hooks.tensorboard_logger import TensorBoardLogger
from utils.batch import is_image_batch
from utils.errors import UserError


class GeneratedSamples(Hook):
    """After each epoch, a grid of `n_samples` images from the model `generator` under the
    tag `samples/generated`, against the optimizer step. The noise is the same every epoch
    (drawn once from its own generator seeded with `seed`, so the run's random stream is
    untouched), so the grids show one set of samples improving. Writes through the run's
    `TensorBoardLogger`; nothing when `trainer.tensorboard` is false. One grid image, so at
    most 1,024 samples.
    """

    def __init__(self, n_samples: Annotated[int, Ge(1), Le(1024)] = 64,
                 seed: Annotated[int, Ge(0), Lt(2**63)] = 0) -> None:  # fmt: skip
        self.n_samples = n_samples
        self.seed = seed
        self.noise: torch.Tensor | None = None  # (n_samples, latent_dim), on the device

    def check(self, trainer: BaseTrainer) -> None:
        generator = trainer.bare_models.get("generator")
        if generator is None or not hasattr(generator, "latent_dim"):
            raise UserError(
                "trainer.hooks: GeneratedSamples needs a model named 'generator' with a "
                f"`latent_dim`; this run's models are {sorted(trainer.bare_models)}"
            )
        try:  # (a generator that fails is named by the trial step)
            output = self._generate(generator, torch.zeros(2, generator.latent_dim,
                                                           device=trainer.device))  # fmt: skip
        except Exception:
            return
        if not is_image_batch(output):
            made = getattr(output, "shape", type(output).__name__)
            raise UserError(f"{self.config_path}: GeneratedSamples draws what the generator makes "
                            "as images, (N, C, H, W) with 1, 3 or 4 channels, and it makes "
                            f"{tuple(made) if isinstance(made, torch.Size) else made}; leave the "
                            "hook out for other data")  # fmt: skip

    @staticmethod
    @torch.no_grad()
    def _generate(generator: torch.nn.Module, noise: torch.Tensor) -> object:
        """The generator's output for `noise`, in eval mode."""
        was_training = generator.training
        generator.eval()
        try:
            return generator(noise)
        finally:
            generator.train(was_training)

    def before_train(self, trainer: BaseTrainer) -> None:
        seeded = torch.Generator().manual_seed(self.seed)  # on the CPU: the same on every device
        latent_dim = trainer.bare_models["generator"].latent_dim
        noise = torch.randn(self.n_samples, latent_dim, generator=seeded)  # (n_samples, latent_dim)
        self.noise = noise.to(trainer.device)

    @torch.no_grad()
    def after_epoch(self, trainer: BaseTrainer) -> None:
        logger = next((h for h in trainer.hooks if isinstance(h, TensorBoardLogger)), None)
        if trainer.run_dirs is None or logger is None or logger.writer is None:
            return
        images = self._generate(trainer.bare_models["generator"], self.noise)  # (N, C, H, W)
        logger.writer.images("samples/generated", images, trainer.step)
