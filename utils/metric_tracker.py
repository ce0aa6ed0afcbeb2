"""Running means of loss and metrics, kept on the device so updates never wait for the GPU."""

import torch

from utils.distributed import all_reduce_sum


class MetricTracker:
    """Sample-weighted means of named values.

    `update` adds to totals on the device (one small kernel, no synchronisation). `flush`
    moves them to the host in one synchronisation and returns the means since the previous
    flush (a logging window); `result` gives the means since `reset` (the whole epoch).
    Under torchrun, `flush` sums every rank's totals and counts first, so each rank gets the
    mean over all of them (every rank must call it at the same point).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._device_totals: dict[str, torch.Tensor] = {}
        self._device_counts: dict[str, int] = {}
        self._totals: dict[str, float] = {}
        self._counts: dict[str, float] = {}

    def update(self, name: str, value: torch.Tensor | float, n: int = 1) -> None:
        """Add a batch mean `value` (a 0-d tensor, possibly on the GPU) over `n` samples."""
        if not isinstance(value, torch.Tensor):
            value = torch.tensor(float(value))
        if name in self._device_totals:
            self._device_totals[name].add_(value.detach(), alpha=n)
        else:
            self._device_totals[name] = value.detach().double() * n
        self._device_counts[name] = self._device_counts.get(name, 0) + n

    def update_all(self, values: dict[str, torch.Tensor | float], n: int) -> None:
        """`update` each of a batch's named values, all over its `n` samples."""
        for name, value in values.items():
            self.update(name, value, n)

    def flush(self) -> dict[str, float]:
        """Means of what was updated since the last flush, as Python floats."""
        names = list(self._device_totals)
        if not names:
            return {}
        totals = torch.stack([self._device_totals[name] for name in names])  # (names,)
        counts = torch.tensor(
            [self._device_counts[name] for name in names], dtype=torch.float64, device=totals.device
        )
        totals, counts = all_reduce_sum(torch.stack([totals, counts])).tolist()
        self._device_totals.clear()
        self._device_counts.clear()
        for name, total, count in zip(names, totals, counts, strict=True):
            self._totals[name] = self._totals.get(name, 0.0) + total
            self._counts[name] = self._counts.get(name, 0.0) + count
        return {
            name: total / count for name, total, count in zip(names, totals, counts, strict=True)
        }

    def result(self) -> dict[str, float]:
        """Means of everything updated since the last reset, as Python floats."""
        self.flush()
        return {name: total / self._counts[name] for name, total in self._totals.items()}

    def state_dict(self) -> dict:
        """The running totals, so that an epoch resumed in its middle reports the same means."""
        return {
            "device_totals": {name: t.cpu() for name, t in self._device_totals.items()},
            "device_counts": dict(self._device_counts),
            "totals": dict(self._totals),
            "counts": dict(self._counts),
        }

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self._device_totals = {name: t.to(device) for name, t in state["device_totals"].items()}
        self._device_counts = dict(state["device_counts"])
        self._totals, self._counts = dict(state["totals"]), dict(state["counts"])
