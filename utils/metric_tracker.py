"""Running means of loss and metrics, kept on the device so updates never wait for the GPU."""

import torch


class MetricTracker:
    """Sample-weighted means of named values; `.result()` is the only host synchronisation."""

    def __init__(self, *names: str) -> None:
        self.names = names
        self.reset()

    def reset(self) -> None:
        self._totals: dict[str, torch.Tensor | float] = dict.fromkeys(self.names, 0.0)
        self._counts = dict.fromkeys(self.names, 0)

    def update(self, name: str, value: torch.Tensor, n: int = 1) -> None:
        """Add a batch mean `value` (a 0-d tensor, possibly on the GPU) over `n` samples."""
        self._totals[name] = self._totals[name] + value.detach() * n
        self._counts[name] += n

    def result(self) -> dict[str, float]:
        """Means of everything updated since the last reset, as Python floats."""
        return {
            name: float(self._totals[name]) / self._counts[name]
            for name in self.names
            if self._counts[name]
        }
