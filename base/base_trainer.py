"""The loop every trainer shares; a subclass says what one training step does with one batch."""

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from base.epoch_batches import BatchFailed, EpochBatches, EpochLoader
from base.gradient_updates import GradientUpdates, NonFiniteLoss
from base.hook import Hook, HookEvents, StopTraining
from base.metric_tracker import MetricTracker
from base.model_wrapping import place_models
from base.trainer_state import TrainerState
from base.trainer_steps import TrainerSteps
from base.trial_step import run_trial_step
from utils.batch import batch_size, first_samples, to_device
from utils.errors import UserError
from utils.run.dirs import RunDirs

logger = logging.getLogger(__name__)


class BaseTrainer(TrainerSteps, HookEvents, TrainerState):
    """Runs epochs of `train_step` over `data_loader`, calling the hooks at every event.

    A subclass defines the steps (`TrainerSteps`). Provided here, for every trainer:
    accumulation, mixed precision and the fp16 scaler, clipping and the non-finite guard
    (`self.updates`), DDP `no_sync`, the epoch loop with mid-epoch resume, validation, the
    monitored value, logged means, and the checkpoint (`TrainerState`). Models, optimizers
    and LR schedulers are held by name; `model_names` says which models a trainer expects.
    """

    def __init__(
        self,
        models: dict[str, nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        data_loader: EpochLoader,
        *,
        device: torch.device,
        config: dict,
        epochs: int,
        valid_data_loader: Any = None,
        lr_schedulers: dict[str, Any] | None = None,
        hooks: Sequence[Hook] = (),
        device_ids: Sequence[int] = (),
        monitor: str = "off",
        len_epoch: int | None = None,
        log_step: int = 10,
        amp: str | bool = False,
        accumulate_steps: int = 1,
        clip_grad_norm: float | None = None,
        compile: bool | dict = False,
        channels_last: bool = False,
        cudnn_benchmark: bool = False,
        on_nonfinite: str | None = None,
        max_skipped: int = 10,
        strategy: str | None = None,
    ) -> None:
        self.bare_models = models  # what checkpoints hold: never wrapped, never compiled
        self.optimizers, self.lr_schedulers = optimizers, lr_schedulers or {}
        self.device, self.config, self.channels_last = device, config, channels_last
        self.epochs, self.log_step, self.valid_data_loader = epochs, log_step, valid_data_loader
        self.updates = GradientUpdates(device, amp, accumulate_steps, clip_grad_norm,
                                       on_nonfinite, max_skipped)  # fmt: skip
        self.batches = EpochBatches(data_loader, len_epoch and len_epoch * accumulate_steps)
        torch.backends.cudnn.benchmark = cudnn_benchmark  # a process-wide switch
        self.hooks = list(hooks)
        self.models = place_models(models, optimizers, device, device_ids, amp=amp,
                                   channels_last=channels_last, compile_option=compile,
                                   strategy=strategy, hooks=self.hooks)  # fmt: skip
        self.start_state(monitor)
        self._check_parts()

    def _check_parts(self) -> None:
        self.check_hooks()
        if self.valid_data_loader is not None and not self.evaluates():
            raise UserError(
                f"data_loader.args.validation_split: {type(self).__name__} has no "
                "validation_step; set the split to 0"
            )

    def trial_step(self) -> None:
        """One training step on the first batch, undone afterwards (`base/trial_step.py`)."""
        run_trial_step(self)

    def train(self, run_dirs: RunDirs | None) -> None:
        """Run the remaining epochs, writing into `run_dirs` (None on ranks that do not write)."""
        self.run_dirs = run_dirs
        self.restore_rng()  # last, so that building the run drew nothing from it
        try:
            self._call("before_train")
            for epoch in range(self.epoch + 1, self.epochs + 1):
                self._train_epoch(epoch)
        except StopTraining:
            logger.info("a hook ended the run at step %d (epoch %d done)", self.step, self.epoch)
        except (BatchFailed, NonFiniteLoss) as error:  # the state before the group is whole
            self.failure = self.save_for_resume(error)
            raise self.failure from error.__cause__
        except BaseException as error:  # an error or a stop signal: `after_train` sees it
            self.failure = error
            raise
        finally:
            self._call("after_train")

    def _train_epoch(self, epoch: int) -> None:
        for model in self.models.values():
            model.train()
        if self.batches.batches_done == 0:
            self.tracker.reset()  # (a resumed epoch restored its totals instead)
        self._call("before_epoch")
        self.group_start, group_values = self.group_position(), []
        for index, batch in enumerate(self.batches.remaining(epoch), self.batches.batches_done):
            if self.updates.start_batch(index, self.batches.batches_per_epoch):
                self._call("before_step")
            logs = self.updates.group_end and self._is_log_step(index)
            self.updates.measure_grad_norms = logs  # only where logged: a pass over the gradients
            self.batch = to_device(batch, self.device, self.channels_last)
            with self.updates.no_sync(self.models):
                group_values.append((self.train_step(self.batch), batch_size(self.batch)))
            self.batches.batches_done = index + 1
            if self.updates.group_end:
                self._end_group(group_values, logs)
                self.group_start, group_values = self.group_position(), []
        self._end_epoch(epoch)

    def _end_group(self, group_values: list[tuple[dict, int]], logs: bool) -> None:
        """After a group's last batch: count the step, track its values (a dropped update's are
        dropped too), publish the window at log steps, and call the `after_step` hooks."""
        if not self.updates.end_group(self.step):
            return
        self.step += 1
        for values, n in group_values:
            self.tracker.update_all(values, n)
        self.step_samples = sum(n for _, n in group_values)
        self.window = self.tracker.flush() if logs else None
        self._call("after_step")
        self.updates.grad_norms.clear()  # each log step's own, never an earlier one's

    def _is_log_step(self, index: int) -> bool:
        """Whether the step ending with batch `index` of the epoch publishes a window: every
        `log_step`-th step of the epoch, and its last (so no step goes unlogged). Counted by
        position in the epoch, so a resumed run and every rank publish at the same steps."""
        epoch_step = index // self.updates.accumulate_steps + 1
        return epoch_step % self.log_step == 0 or index + 1 == self.batches.batches_per_epoch

    def _end_epoch(self, epoch: int) -> None:
        log = self.tracker.result()
        if self.valid_data_loader is not None:
            validation = self.validate(self.valid_data_loader)
            log.update({"val_" + name: value for name, value in validation.items()})
        self.epoch, self.epoch_log = epoch, log
        self.batches.batches_done = 0
        self.monitor.update(log)
        values = "  ".join(f"{name} {value:.6g}" for name, value in log.items())
        logger.info("epoch %d/%d  step %d  %s", epoch, self.epochs, self.step, values)
        self._call("after_epoch")

    @torch.no_grad()
    def validate(self, data_loader: Any) -> dict[str, float]:
        """Sample-weighted means of `validation_step` over all of `data_loader` (under torchrun:
        every rank's share, where a sample repeated to even the shares is stepped on, for the
        ranks' collectives, but not counted), in eval mode, between the `*_validation` hook
        events."""
        self._call("before_validation")
        for model in self.models.values():
            model.eval()
        tracker = MetricTracker(self.stateful_metrics(), self.device)
        repeats = getattr(getattr(data_loader, "sampler", None), "repeats", 0)
        last = len(data_loader) if repeats else None
        for index, batch in enumerate(data_loader, 1):
            batch = to_device(batch, self.device, self.channels_last)
            size = batch_size(batch)
            n = size - repeats if index == last else size
            values = self.validation_step(first_samples(batch, n) if 0 < n < size else batch)
            if n:
                tracker.update_all(values, n)
        for model in self.models.values():
            model.train()
        self._call("after_validation")
        return tracker.result()
