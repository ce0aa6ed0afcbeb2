"""An exponential moving average of a model's weights, which often validates better than the
weights themselves: `trainer.hooks: [{"type": "EMA", "args": {"decay": 0.999}}]`."""

import logging
from typing import Annotated

import torch
from annotated_types import Gt, Lt

from base import BaseTrainer, Hook
from utils.errors import UserError, did_you_mean

logger = logging.getLogger(__name__)


class EMA(Hook):
    """Keeps `shadow = decay * shadow + (1 - decay) * weights` after every optimizer step, for
    the floating entries of `trainer.bare_models[model].state_dict()` (integer buffers, such as
    BatchNorm's batch count, are copied). With `warmup`, update t (from 0) uses
    `min(decay, (1 + t) / (10 + t))`, so early averages do not hold on to the random init.
    With `evaluate`, validation (hence `model_best.pth` and test.py) sees the averaged weights;
    training never does: they are swapped in for validation and the training weights put back."""

    def __init__(self, decay: Annotated[float, Gt(0), Lt(1)] = 0.999, warmup: bool = False,
                 evaluate: bool = True, model: str = "model") -> None:  # fmt: skip
        self.decay, self.warmup, self.evaluate, self.model = decay, warmup, evaluate, model
        self.shadow: dict[str, torch.Tensor] | None = None  # state_dict key -> averaged tensor
        self.updates = 0  # optimizer steps averaged so far
        self._training_weights: dict[str, torch.Tensor] | None = None  # during validation
        self._floats: list[str] = []  # the averaged entries (the others are copied)

    @property
    def state_key(self) -> str:
        return f"EMA(model={self.model}, decay={self.decay}, warmup={self.warmup})"

    def check(self, trainer: BaseTrainer) -> None:
        if self.model not in trainer.bare_models:
            raise UserError(f"{self.config_path}.args.model: {self.model!r} is not a model of "
                            f"this run{did_you_mean(self.model, trainer.bare_models)}")  # fmt: skip
        evaluated = [h.model for h in trainer.hooks if isinstance(h, EMA) and h.evaluate]
        if self.evaluate and evaluated.count(self.model) > 1:  # each would restore the other's
            raise UserError(f"trainer.hooks: two EMA hooks evaluate {self.model!r}; set "
                            "`evaluate: false` on all but one")  # fmt: skip

    def _weights(self, trainer: BaseTrainer) -> dict[str, torch.Tensor]:
        """The averaged model's state (live tensors), with a loaded shadow moved beside it."""
        weights = trainer.bare_models[self.model].state_dict()
        if self.shadow is not None:
            self.shadow = {k: v.to(weights[k].device) for k, v in self.shadow.items()}
        return weights

    def before_train(self, trainer: BaseTrainer) -> None:
        weights = self._weights(trainer)
        if self.shadow is None:  # a new run (a resumed one has its shadow loaded already)
            self.shadow = {k: v.detach().clone() for k, v in weights.items()}
        self._floats = [k for k, v in self.shadow.items() if v.is_floating_point()]

    @torch.no_grad()
    def after_step(self, trainer: BaseTrainer) -> None:
        weights, t = trainer.bare_models[self.model].state_dict(), self.updates
        decay = min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay
        floats = self._floats
        # shadow += (1 - decay) * (weights - shadow), on all floating tensors in one call
        torch._foreach_lerp_([self.shadow[k] for k in floats], [weights[k] for k in floats],
                             1 - decay)  # fmt: skip
        for key in self.shadow.keys() - set(floats):
            self.shadow[key].copy_(weights[key])
        self.updates += 1

    def before_validation(self, trainer: BaseTrainer) -> None:
        if not self.evaluate:
            return
        weights = self._weights(trainer)  # test.py validates without before_train
        if self.shadow is None:
            logger.warning("%s has no averaged weights to evaluate (none in the checkpoint); "
                           "validating the model's own", self.state_key)  # fmt: skip
            return
        self._training_weights = {k: v.clone() for k, v in weights.items()}
        trainer.bare_models[self.model].load_state_dict(self.shadow)

    def after_validation(self, trainer: BaseTrainer) -> None:
        if self._training_weights is not None:
            trainer.bare_models[self.model].load_state_dict(self._training_weights)
            self._training_weights = None

    def state_dict(self) -> dict:
        return {} if self.shadow is None else {"weights": self.shadow, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.shadow, self.updates = dict(state["weights"]), state["updates"]
