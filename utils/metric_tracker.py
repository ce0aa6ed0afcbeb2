"""Running means of loss and metrics, kept on the device so updates never wait for the GPU."""

import torch

from utils.distributed import all_reduce_sum


class MetricTracker:
    """Sample-weighted means of named values; `.result()` is the only host synchronisation.

    Under torchrun, `.result()` sums the totals and counts of every rank first, so each rank
    gets the mean over all of them (every rank must call it at the same point).
    """

    def __init__(self, *names: str) -> None:
        self.names = names
        self.reset()

    def reset(self) -> None:
        self._totals: dict[str, torch.Tensor] = {}
        self._counts = dict.fromkeys(self.names, 0)

    def update(self, name: str, value: torch.Tensor, n: int = 1) -> None:
        """Add a batch mean `value` (a 0-d tensor, possibly on the GPU) over `n` samples."""
        total = value.detach().float() * n
        self._totals[name] = self._totals[name] + total if name in self._totals else total
        self._counts[name] += n

    def result(self) -> dict[str, float]:
        """Means of everything updated since the last reset, as Python floats."""
        names = [name for name in self.names if name in self._totals]
        if not names:
            return {}
        totals = torch.stack([self._totals[name] for name in names]).double()  # (names,)
        counts = torch.tensor(
            [self._counts[name] for name in names], dtype=torch.float64, device=totals.device
        )
        means = all_reduce_sum(totals) / all_reduce_sum(counts)
        return dict(zip(names, means.tolist(), strict=True))
