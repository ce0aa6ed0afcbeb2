"""The loop every trainer shares; a subclass says what one training step does with one batch."""

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from base.epoch_batches import BatchFailed, EpochBatches
from base.epoch_loader import EpochLoader
from base.gradient_updates import GradientUpdates, NonFiniteLoss
from base.hook import Hook, check_state_keys
from base.metric_tracker import MetricTracker
from base.model_wrapping import wrap_model
from base.monitor import Monitor
from base.sharding import strategy_problem
from base.trainer_state import TrainerState
from base.trial_step import run_trial_step
from utils.batch import batch_size, to_device
from utils.distributed.process_group import is_distributed
from utils.errors import TrainingFailed, UserCodeFailed, UserError
from utils.run.dirs import RunDirs

logger = logging.getLogger(__name__)


class StopTraining(Exception):
    """Ends the run normally after the current event (early stopping, a hook's request)."""


class BaseTrainer(TrainerState, ABC):
    """Runs epochs of `train_step` over `data_loader`, calling the hooks at every event.

    Provided here, for every trainer: accumulation, mixed precision and the fp16 scaler,
    clipping and the non-finite guard (`self.updates`), DDP `no_sync`, the epoch loop with
    mid-epoch resume, validation, the monitored value, logged means, and the checkpoint
    (`TrainerState`). Models, optimizers and LR schedulers are held by name; `model_names`
    says which models a trainer expects.
    """

    model_names: tuple[str, ...] = ("model",)
    # The evaluation report test.py makes under `test.report: auto`: a report's name (a
    # module of logger/reports/); None chooses one from the model's output and the targets.
    report: str | None = None

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
        self.optimizers = optimizers
        self.lr_schedulers = lr_schedulers or {}
        self.device, self.config = device, config
        self.epochs, self.log_step = epochs, log_step
        self.valid_data_loader = valid_data_loader
        self.updates = GradientUpdates(
            device, amp, accumulate_steps, clip_grad_norm, on_nonfinite, max_skipped
        )
        self.batches = EpochBatches(data_loader, len_epoch and len_epoch * accumulate_steps)
        self.channels_last = channels_last
        torch.backends.cudnn.benchmark = cudnn_benchmark  # a process-wide switch
        problem = strategy_problem(strategy, is_distributed(), amp=amp, compile=compile,
                                   model_names=list(models),
                                   hooks=[type(hook).__name__ for hook in hooks])  # fmt: skip
        if problem:
            raise UserError(problem)
        for model in models.values():  # in place: the optimizers keep their parameters
            model.to(device, memory_format=torch.channels_last if channels_last else None)
        self.models = {
            name: wrap_model(model, device, device_ids, compile, strategy, optimizers.values())
            for name, model in models.items()
        }
        self.monitor = Monitor(monitor, self.logged_names())
        self.hooks = list(hooks)
        self._check_parts()
        self.tracker = MetricTracker(self.stateful_metrics(), device)  # the current epoch's
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.batch: Any = None  # the batch being trained on, on the device
        self.step_samples = 0  # samples this rank trained on in the last step
        self.window: dict[str, float] | None = None  # at log steps: means since the epoch's last
        self.epoch_log: dict[str, float] = {}  # the last epoch's means (val_ for validation)
        self.run_dirs: RunDirs | None = None  # None on ranks that do not write
        self.stop_requested = False
        self.failure: BaseException | None = None  # what ended the run, if not its normal end
        self._stop: BaseException = StopTraining()
        self._rng_state: dict | None = None
        self.group_start: dict[str, int] = {}  # the position before the current group of batches

    @abstractmethod
    def logged_names(self) -> list[str]:
        """The names of the epoch log: what `train_step` returns, and `val_` + what
        `validation_step` returns when there is validation. `trainer.monitor` must be one."""

    @abstractmethod
    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """Train on one batch (already on the device): forward under `self.updates.autocast()`,
        `self.updates.backward(loss)`, `self.updates.step(optimizer)` for each optimizer.
        Return the batch's values to log (0-d tensors, kept on the device)."""

    def stateful_metrics(self) -> dict[str, Any]:
        """The logged values that are computed from a state over all their batches (such as
        torchmetrics metrics), by name: `train_step` and `validation_step` give each its
        `MetricInputs`. None by default."""
        return {}

    def validation_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """Evaluate one batch (no gradients, eval mode); return the values to log."""
        raise NotImplementedError(f"{type(self).__name__} has no validation_step")

    def request_stop(self, reason: BaseException | None = None) -> None:
        """End the run after the current event's hooks (all of them still run, so the
        `Checkpointer` after the caller saves first); raise `reason`, else end normally."""
        self.stop_requested = True
        self._stop = reason or StopTraining()

    def trial_step(self) -> None:
        """One training step on the first batch, undone afterwards (`base/trial_step.py`): a
        config value that fails only when used fails here, as a `UserError` naming its node,
        before the run directory exists."""
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
        except BatchFailed as failed:  # the user's data: its traceback, then where to resume
            saved = self._save_group_start()
            self.failure = UserCodeFailed(
                f"the data loader raised {failed.summary()} at epoch "
                f"{self.epoch + 1}, batch {failed.batch} (its traceback is above); the last "
                f"step's state is in {saved}: fix the data, then resume with "
                f"python train.py -r {saved}"
            )
            raise self.failure from failed.__cause__
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
        n_batches, group = self.batches.batches_per_epoch, self.updates.accumulate_steps
        self.group_start, group_values = self.batches.position(), []
        for index, batch in enumerate(self.batches.remaining(epoch), self.batches.batches_done):
            first = index - index % group
            if index == first:
                self._call("before_step")
            self.updates.group_size = min(group, n_batches - first)
            self.updates.group_end = index + 1 == first + self.updates.group_size
            logs = self.updates.group_end and self._is_log_step(index)
            self.updates.measure_grad_norms = logs  # only where logged: a pass over the gradients
            self.batch = to_device(batch, self.device, self.channels_last)
            try:
                with self.updates.no_sync(self.models):
                    group_values.append((self.train_step(self.batch), batch_size(self.batch)))
            except NonFiniteLoss:
                self._stop_on_nonfinite(epoch, index)
            self.batches.batches_done = index + 1
            if self.updates.group_end:
                self._end_group(group_values, logs)
                self.group_start, group_values = self.batches.position(), []
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
        every rank's share), in eval mode, between the `*_validation` hook events."""
        self._call("before_validation")
        for model in self.models.values():
            model.eval()
        tracker = MetricTracker(self.stateful_metrics(), self.device)
        for batch in data_loader:
            batch = to_device(batch, self.device, self.channels_last)
            tracker.update_all(self.validation_step(batch), batch_size(batch))
        for model in self.models.values():
            model.train()
        self._call("after_validation")
        return tracker.result()

    def _call(self, event: str) -> None:
        """Call `event` on every hook, then stop if one of them asked to."""
        for hook in self.hooks:
            getattr(hook, event)(self)
        if self.stop_requested and event != "after_train":
            raise self._stop

    def _save_group_start(self) -> str:
        """Save the state from before the current group of batches as a step checkpoint (a
        resumed run replays the group); where it is."""
        self.batches.load_position(self.group_start)
        return str(self.save(f"checkpoint-step{self.step}.pth") or "no checkpoint (not rank 0)")

    def _stop_on_nonfinite(self, epoch: int, index: int) -> None:
        """`on_nonfinite: "stop"`: save the state from before this group, then fail."""
        saved = self._save_group_start()
        raise TrainingFailed(
            f"non-finite loss at step {self.step + 1} (epoch {epoch}, batch {index + 1}); "
            f"the last good state is in {saved}. Lower the learning rate, or set "
            "trainer.on_nonfinite to 'skip'"
        )

    def _check_parts(self) -> None:
        check_state_keys(self.hooks)
        for hook in self.hooks:
            hook.check(self)
        if self.valid_data_loader is not None and not self.evaluates():
            raise UserError(
                f"data_loader.args.validation_split: {type(self).__name__} has no "
                "validation_step; set the split to 0"
            )

    @classmethod
    def evaluates(cls) -> bool:
        """Whether this trainer has a `validation_step` (validation, test.py)."""
        return cls.validation_step is not BaseTrainer.validation_step
