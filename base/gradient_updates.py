"""How losses become optimizer steps: precision, accumulation, clipping, the non-finite guard."""

import logging
import math
from contextlib import AbstractContextManager, ExitStack

import torch
from torch import nn

from base.sharding import is_sharded, is_sharded_tensor
from utils.distributed.precision import amp_dtype, autocast
from utils.distributed.process_group import all_reduce_sum, is_distributed
from utils.errors import TrainingFailed

logger = logging.getLogger(__name__)


class NonFiniteLoss(Exception):
    """A loss was NaN or infinite with `on_nonfinite: "stop"`; the trainer saves and stops."""


class GradientUpdates:
    """The machinery between a training step's losses and its optimizers.

    A step calls `backward(loss)`, then `step(optimizer)` for each optimizer: one optimizer step
    per group of `accumulate_steps` batches. At log steps (`measure_grad_norms`) each optimizer's
    gradient norm before clipping is kept in `grad_norms` for the loggers. With `on_nonfinite`
    set, each loss is checked (one host sync): "skip" drops the group's update, "stop" raises
    `NonFiniteLoss`.
    """

    def __init__(
        self,
        device: torch.device,
        amp: str | bool = False,
        accumulate_steps: int = 1,
        clip_grad_norm: float | None = None,
        on_nonfinite: str | None = None,
        max_skipped: int = 10,
    ) -> None:
        self.device = device
        self.precision = amp_dtype(amp, device)  # the autocast dtype; None: fp32
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
        self.accumulate_steps = accumulate_steps
        self.clip_grad_norm = clip_grad_norm
        self.on_nonfinite = on_nonfinite
        self.max_skipped = max_skipped
        self.skipped_in_a_row = 0
        self.group_size = 1  # batches in the current accumulation group
        self.group_end = True  # whether the current batch is its group's last
        self.group_finite = True  # no non-finite loss in the current group so far
        self.measure_grad_norms = False  # whether this group's `step`s record `grad_norms`
        self.grad_norms: dict[torch.optim.Optimizer, torch.Tensor] = {}

    def start_batch(self, index: int, batches_per_epoch: int) -> bool:
        """Place batch `index` (from 0) of the epoch in its group (an epoch's last group may
        be smaller); True when the batch starts the group."""
        first = index - index % self.accumulate_steps
        self.group_size = min(self.accumulate_steps, batches_per_epoch - first)
        self.group_end = index + 1 == first + self.group_size
        return index == first

    def autocast(self) -> AbstractContextManager:
        """The forward pass's precision (`trainer.amp`)."""
        return autocast(self.device, self.precision)

    def no_sync(self, models: dict[str, nn.Module]) -> ExitStack:
        """Under DDP or FSDP, skip the gradient all-reduce (reduce-scatter) for batches before
        the group's last one (wraps the forward and backward passes of a training step)."""
        stack = ExitStack()
        if not self.group_end and is_distributed():
            for model in models.values():
                if hasattr(model, "no_sync"):
                    stack.enter_context(model.no_sync())
                elif is_sharded(model):
                    model.set_requires_gradient_sync(False)
                    stack.callback(model.set_requires_gradient_sync, True)
        return stack

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate the gradients of `loss` (a 0-d tensor), scaled for fp16 and the group."""
        if self.on_nonfinite is not None and not self._finite(loss):
            if self.on_nonfinite == "stop":
                raise NonFiniteLoss
            self.group_finite = False
            return
        self.scaler.scale(loss / self.group_size).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """At the group's last batch: unscale, clip, step, clear `optimizer` (a group with a
        non-finite loss only clears it; with fp16, the scaler skips a step that overflowed)."""
        if not self.group_end:
            return
        if self.group_finite:
            if self.clip_grad_norm is not None or self.measure_grad_norms:
                self.scaler.unscale_(optimizer)  # the norm and the clip are of true gradients
                norm = self._clip_and_measure(optimizer)
                if self.measure_grad_norms:
                    self.grad_norms[optimizer] = norm
            self.scaler.step(optimizer)  # skipped when fp16 gradients overflowed
        optimizer.zero_grad(set_to_none=True)

    def _clip_and_measure(self, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """Clip the gradients of `optimizer` to `clip_grad_norm` (when set); return their total
        norm before clipping, a 0-d tensor on the device (no host sync). Without a bound,
        torch's clip with an infinite one measures the norm and leaves the gradients as they are."""
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        bound = math.inf if self.clip_grad_norm is None else self.clip_grad_norm
        norm = nn.utils.clip_grad_norm_(parameters, bound)
        return norm.full_tensor() if is_sharded_tensor(norm) else norm  # FSDP: every shard's

    def end_group(self, step: int) -> bool:
        """After the group's last batch: True when its update went in. A dropped one is logged,
        and after `max_skipped` in a row the run fails (it is diverging)."""
        finite, self.group_finite = self.group_finite, True
        if finite:
            self.scaler.update()
            self.skipped_in_a_row = 0
            return True
        self.skipped_in_a_row += 1
        logger.warning(
            "non-finite loss: skipped the update after step %d (%d in a row)",
            step,
            self.skipped_in_a_row,
        )
        if self.skipped_in_a_row >= self.max_skipped:
            raise TrainingFailed(
                f"trainer.max_skipped: {self.skipped_in_a_row} updates in a row had a "
                f"non-finite loss (after step {step}); the run is diverging"
            )
        return False

    def _finite(self, loss: torch.Tensor) -> bool:
        """Whether `loss` is finite on every rank (under torchrun all ranks agree)."""
        bad = (~torch.isfinite(loss.detach())).float().reshape(1)
        return not all_reduce_sum(bad).item()
