"""The monitored value: which epoch is the best so far, and for how long it has not improved."""

import math
from typing import Any

from utils.config.keys import parse_monitor
from utils.errors import UserError, did_you_mean


class Monitor:
    """Tracks `"min NAME"` or `"max NAME"` of the epoch log (or nothing, for `"off"`).

    Checkpoints keep `best` and `not_improved_count` (as `monitor_best` and
    `not_improved_count`); `model_best.pth` and early stopping read them (`ReduceLROnPlateau`
    watches the epoch log's value of `name` itself).
    """

    def __init__(self, monitor: str, logged_names: list[str]) -> None:
        self.mode, self.name = parse_monitor(monitor)
        if self.enabled and self.name not in logged_names:
            raise UserError(
                f"trainer.monitor: {self.name!r} is not logged by this run"
                f"{did_you_mean(self.name, logged_names)}"
            )
        self.forget_best()
        self.not_improved_count = 0
        self.improved = False  # whether the last epoch set a new best

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def update(self, log: dict[str, float]) -> None:
        """Take one epoch's log; `improved` says whether its value is a new best."""
        if not self.enabled:
            return
        value = log[self.name]
        self.improved = value < self.best if self.mode == "min" else value > self.best
        if self.improved:
            self.best, self.not_improved_count = value, 0
        else:
            self.not_improved_count += 1

    def forget_best(self) -> None:
        """Let the next value be a new best (its model is then saved); the count of epochs
        without improvement, which early stopping reads, goes on."""
        self.best = math.inf if self.mode == "min" else -math.inf

    def state_dict(self) -> dict[str, Any]:
        return {"monitor_best": self.best, "not_improved_count": self.not_improved_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.not_improved_count = state["monitor_best"], state["not_improved_count"]
