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

    def text(self, tag: str, markdown: str, step: int) -> None:
        """Log `markdown`, shown rendered in TensorBoard's Text tab."""
        if self._writer is not None:
            self._writer.add_text(tag, markdown, step)

    def images(self, tag: str, batch: torch.Tensor, step: int) -> None:
        """Log a grid of a batch of images, shape (N, C, H, W), scaled to [0, 1] as a whole."""
        if self._writer is not None:
            batch = batch.detach().float().cpu()
            low, high = batch.min(), batch.max()
            self._writer.add_images(tag, (batch - low) / (high - low).clamp_min(1e-12), step)

    def histograms(
        self, model: torch.nn.Module, step: int, bins: int = 64, prefix: str = "parameters/"
    ) -> None:
        """A histogram of every parameter, binned on its own device: one copy to the host for
        all of them (not one per parameter, which costs a large model most of a GPU epoch)."""
        if self._writer is None:
            return
        names, parameters = zip(*model.named_parameters(), strict=True)
        flat = [parameter.detach().float().flatten() for parameter in parameters]
        low = torch.stack([values.min() for values in flat])  # (P,)
        high = torch.stack([values.max() for values in flat])
        width = (high - low).clamp_min(1e-12)
        counts = torch.stack(  # (P, bins): histc needs fixed bounds, so bin the rescaled values
            [
                torch.histc((v - lo) / w, bins, 0, 1)
                for v, lo, w in zip(flat, low, width, strict=True)
            ]
        )
        sums = torch.stack([torch.stack([v.sum(), (v * v).sum()]) for v in flat])  # (P, 2)
        low, high, counts, sums = (t.double().cpu() for t in (low, high, counts, sums))
        edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)[1:]
        for index, name in enumerate(names):
            self._writer.add_histogram_raw(
                f"{prefix}{name}",
                min=low[index].item(),
                max=high[index].item(),
                num=flat[index].numel(),
                sum=sums[index, 0].item(),
                sum_squares=sums[index, 1].item(),
                bucket_limits=(low[index] + edges * (high[index] - low[index])).tolist(),
                bucket_counts=counts[index].tolist(),
                global_step=step,
            )

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
