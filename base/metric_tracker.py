"""Running values of loss and metrics, kept on the device so updates never wait for the GPU."""

import copy
import sys
from typing import Any, NamedTuple

import torch

from utils.distributed.process_group import all_reduce_sum, is_main_process


def is_stateful(metric: Any) -> bool:
    """Whether `metric` is a torchmetrics `Metric` (torchmetrics is imported by whoever made
    one; a run of function metrics never pays for its import)."""
    torchmetrics = sys.modules.get("torchmetrics")
    return torchmetrics is not None and isinstance(metric, torchmetrics.Metric)


class MetricInputs(NamedTuple):
    """What a stateful metric (a torchmetrics `Metric`) is updated with for one batch, in
    place of a batch value: a trainer's step returns it, and the tracker updates the metric
    when the step's values count (a dropped update's batches are dropped here too)."""

    output: Any
    target: Any


class MetricTracker:
    """Values of named quantities over a logging window (`flush`) and the epoch (`result`).

    Batch means (`update`) become their sample-weighted mean: exact for a mean of per-sample
    terms (the loss, accuracy). A `stateful` metric (torchmetrics: R^2, F1, AUROC) is computed
    from its state over all the batches, not as a mean of batch values. Updates stay on the
    device; under torchrun `flush` and `result` sum (or gather) every rank's part first, so
    every rank must call them at the same point.
    """

    def __init__(self, stateful: dict[str, Any] | None = None, device: Any = None) -> None:
        prototypes = stateful or {}
        self._gathered: dict | None = None
        self._epoch = {name: copy.deepcopy(m).to(device) for name, m in prototypes.items()}
        self._window = {name: copy.deepcopy(m).to(device) for name, m in prototypes.items()}
        self.reset()

    def reset(self) -> None:
        self._device_totals: dict[str, torch.Tensor] = {}
        self._device_counts: dict[str, int] = {}
        self._totals: dict[str, float] = {}
        self._counts: dict[str, float] = {}
        for metric in [*self._epoch.values(), *self._window.values()]:
            metric.reset()

    def update(self, name: str, value: torch.Tensor | float | MetricInputs, n: int = 1) -> None:
        """Add a batch mean `value` (a 0-d tensor, possibly on the GPU) over `n` samples, or
        a stateful metric's `MetricInputs`."""
        if name in self._epoch:
            self._epoch[name].update(value.output, value.target)
            self._window[name].update(value.output, value.target)
            return
        total = torch.as_tensor(value).detach().double() * n
        pending = self._device_totals.get(name)
        self._device_totals[name] = total if pending is None else pending + total
        self._device_counts[name] = self._device_counts.get(name, 0) + n

    def update_all(self, values: dict[str, Any], n: int) -> None:
        """`update` each of a batch's named values, all over its `n` samples."""
        for name, value in values.items():
            self.update(name, value, n)

    def flush(self) -> dict[str, float]:
        """The values of what was updated since the last flush, as Python floats."""
        window = _computed(self._window)
        for metric in self._window.values():
            metric.reset()
        names = list(self._device_totals)
        if not names:
            return window
        totals, counts = self._summed_pending(names).tolist()
        self._device_totals.clear()
        self._device_counts.clear()
        means = {}
        for name, total, count in zip(names, totals, counts, strict=True):
            self._totals[name] = self._totals.get(name, 0.0) + total
            self._counts[name] = self._counts.get(name, 0.0) + count
            means[name] = total / count
        return {**means, **window}

    def _summed_pending(self, names: list[str]) -> torch.Tensor:
        """The pending totals and counts of `names`, summed over the ranks: (2, names)."""
        totals = torch.stack([self._device_totals[name] for name in names])  # (names,)
        counts = torch.tensor(
            [self._device_counts[name] for name in names], dtype=torch.float64, device=totals.device
        )
        return all_reduce_sum(torch.stack([totals, counts]))

    def result(self) -> dict[str, float]:
        """The values of everything updated since the last reset, as Python floats."""
        self.flush()
        means = {name: total / self._counts[name] for name, total in self._totals.items()}
        return {**means, **_computed(self._epoch)}

    def gather(self) -> None:
        """Under torchrun, every rank calls it before the writing rank's `state_dict`: the
        window's pending totals summed over the ranks and every rank's metric states, for the
        checkpoint (on resume, the writing rank alone starts from them). Nothing is published
        or reset: a run logs the windows it would log without saving."""
        names = list(self._device_totals)
        self._gathered = {"stateful": self._states(gather=True)}
        if names:
            totals, counts = self._summed_pending(names)
            self._gathered["device_totals"] = dict(zip(names, totals, strict=True))
            self._gathered["device_counts"] = {
                name: int(count) for name, count in zip(names, counts.tolist(), strict=True)
            }

    def _states(self, gather: bool) -> dict:
        return {
            name: {"epoch": _state(self._epoch[name], gather),
                   "window": _state(self._window[name], gather)}
            for name in self._epoch
        }  # fmt: skip

    def state_dict(self) -> dict:
        """The running totals and metric states, so that an epoch resumed in its middle
        reports the same values (under torchrun, the window's of the last `gather`)."""
        gathered, self._gathered = self._gathered or {}, None
        return {
            "device_totals": {name: t.cpu() for name, t in
                              gathered.get("device_totals", self._device_totals).items()},
            "device_counts": dict(gathered.get("device_counts", self._device_counts)),
            "totals": dict(self._totals),
            "counts": dict(self._counts),
            "stateful": gathered.get("stateful") or self._states(gather=False),
        }  # fmt: skip

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        # The window's totals are every rank's summed: the writing rank starts from them, the
        # others from zeros of the same names (each flush sums the ranks' tensors by name).
        main = is_main_process()
        self._device_totals = {name: (t if main else torch.zeros_like(t)).to(device)
                               for name, t in state["device_totals"].items()}  # fmt: skip
        self._device_counts = {name: n if main else 0 for name, n in state["device_counts"].items()}
        self._totals, self._counts = dict(state["totals"]), dict(state["counts"])
        # Only the writing rank takes the gathered metric states (the others' empty states add
        # nothing to them), but every rank takes their update counts: whether a metric is
        # computed, which syncs every rank's state, must be decided alike on all of them.
        for name, saved in state.get("stateful", {}).items():
            if name in self._epoch:
                _load_state(self._epoch[name], saved["epoch"], device, is_main_process())
                _load_state(self._window[name], saved["window"], device, is_main_process())


def _computed(metrics: dict[str, Any]) -> dict[str, float]:
    """Each updated metric's value over its state (gathered across ranks under torchrun)."""
    return {name: float(m.compute()) for name, m in metrics.items() if m.update_count > 0}


def _state(metric: Any, gather: bool) -> dict:
    """A metric's state as plain tensors on the CPU (lists of them for a `cat` state), with
    its update count; with `gather` (every rank at once), gathered from every rank."""
    with metric.sync_context(should_sync=gather and metric.update_count > 0, should_unsync=True):
        values = {key: _to(value, "cpu") for key, value in metric.metric_state.items()}
    return {"values": values, "updates": metric.update_count}


def _load_state(metric: Any, saved: dict, device: torch.device, values: bool) -> None:
    """A saved state's update count, and (with `values`) its values."""
    metric.reset()
    if values:
        for key, value in saved["values"].items():
            setattr(metric, key, _to(value, device))
    metric._update_count = saved["updates"]  # torchmetrics keeps no public setter


def _to(value: Any, device: Any) -> Any:
    if isinstance(value, list):
        return [item.to(device) for item in value]
    return value.to(device)
