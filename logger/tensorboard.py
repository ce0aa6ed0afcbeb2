"""A TensorBoard writer that can be switched off without `if` statements at every call site."""

from pathlib import Path

import torch


class TensorboardWriter:
    """Thin wrapper over `SummaryWriter`; when disabled every method does nothing.

    `purge_step` is the step a resumed run starts from: TensorBoard then hides events at
    or after it that an interrupted earlier attempt wrote, so the curves continue cleanly.
    """

    def __init__(self, log_dir: Path, enabled: bool, purge_step: int | None = None) -> None:
        self._writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter  # slow import, only when used

            self._writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(prefix + name, value, step)

    def images(self, tag: str, batch: torch.Tensor, step: int) -> None:
        """Log a grid of a batch of images, shape (N, C, H, W), scaled to [0, 1] as a whole."""
        if self._writer is not None:
            batch = batch.detach().float().cpu()
            low, high = batch.min(), batch.max()
            self._writer.add_images(tag, (batch - low) / (high - low).clamp_min(1e-12), step)

    def histograms(self, model: torch.nn.Module, step: int) -> None:
        if self._writer is not None:
            for name, parameter in model.named_parameters():
                self._writer.add_histogram(f"parameters/{name}", parameter.detach().cpu(), step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
