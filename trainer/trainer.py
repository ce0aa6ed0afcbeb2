"""The supervised trainer: the train step, the validation pass, and what gets logged."""

import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import ReduceLROnPlateau
from tqdm import tqdm

from base import BaseDataLoader, BaseTrainer, TensorDataLoader
from utils.distributed import all_reduce_sum, is_distributed, is_main_process
from utils.errors import TrainingFailed, UserError
from utils.metric_tracker import MetricTracker
from utils.precision import amp_dtype, autocast

logger = logging.getLogger(__name__)


def to_device(tensor: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """Copy a batch to `device` without waiting (from pinned memory the copy is asynchronous);
    images (4-d) optionally in channels-last layout, which tensor cores prefer."""
    layout = torch.channels_last if channels_last and tensor.dim() == 4 else torch.preserve_format
    return tensor.to(device, non_blocking=True, memory_format=layout)


def track_batch(
    tracker: MetricTracker,
    metric_fns: dict[str, Callable],
    loss: torch.Tensor,
    output: torch.Tensor,
    target: torch.Tensor,
) -> None:
    """Add one batch's loss and metrics to `tracker`, without leaving the device."""
    tracker.update("loss", loss, n=len(target))
    for name, metric in metric_fns.items():
        tracker.update(name, metric(output, target), n=len(target))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data_loader: Any,
    criterion: Callable,
    metric_fns: dict[str, Callable],
    device: torch.device,
    description: str,
    progress_bar: bool,
    precision: torch.dtype | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """Sample-weighted mean loss and metrics of `model`, in eval mode, over all of `data_loader`
    (under torchrun: over every rank's share). `precision` is the autocast dtype, if any."""
    model.eval()
    tracker = MetricTracker("loss", *metric_fns)
    bar = tqdm(data_loader, desc=description, disable=not progress_bar, leave=False,
               dynamic_ncols=True)  # fmt: skip
    for data, target in bar:
        data = to_device(data, device, channels_last)
        target = to_device(target, device, channels_last)
        with autocast(device, precision):
            output = model(data)
            loss = criterion(output, target)
        track_batch(tracker, metric_fns, loss, output, target)
    return tracker.result()


def wrap_model(
    model: nn.Module, device: torch.device, device_ids: Sequence[int], compile_option: bool | dict
) -> nn.Module:
    """The module training calls: DDP under torchrun, DataParallel for several GPUs in one
    process, then `torch.compile` when asked. Checkpoints keep using the unwrapped model."""
    if is_distributed():
        ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=ids)
    elif len(device_ids) > 1:
        logger.warning(
            "n_gpu > 1 in one process uses DataParallel; `torchrun --nproc_per_node=%d "
            "train.py ...` (DistributedDataParallel) is faster.",
            len(device_ids),
        )
        model = nn.DataParallel(model, device_ids=list(device_ids))
    if compile_option is False:
        return model
    args = {} if compile_option is True else compile_option
    try:
        inspect.signature(torch.compile).bind(model, **args)
        return torch.compile(model, **args)  # checks its arguments now, compiles on first call
    except (TypeError, ValueError, RuntimeError, AttributeError) as error:
        detail = " ".join(str(error).split())
        raise UserError(f"trainer.compile: {detail}; see torch.compile for its arguments") from None


class Trainer(BaseTrainer):
    """Trains `model` on `(input, target)` batches with `criterion`, tracking `metric_fns`.

    One optimizer step follows `accumulate_steps` batches, their losses averaged; gradients
    are unscaled (fp16) and clipped before it. Values are accumulated on the device; they
    reach the host (one synchronisation) only every `log_step` optimizer steps and at the
    end of an epoch.
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: Callable,
        metric_fns: dict[str, Callable],
        optimizer: torch.optim.Optimizer,
        config: dict,
        device: torch.device,
        data_loader: BaseDataLoader | TensorDataLoader,
        valid_data_loader: Any = None,
        lr_scheduler: Any = None,
        device_ids: Sequence[int] = (),
    ) -> None:
        self.metric_fns = metric_fns
        self.valid_data_loader = valid_data_loader
        super().__init__(model, optimizer, lr_scheduler, config)
        self.criterion = criterion
        self.device = device
        self.data_loader = data_loader
        options = config["trainer"]
        self.precision = amp_dtype(options["amp"], device)  # the autocast dtype; None: fp32
        self.scaler = torch.amp.GradScaler(device.type, enabled=options["amp"] == "fp16")
        self.accumulate_steps = options["accumulate_steps"]
        self.clip_grad_norm = options["clip_grad_norm"]
        self.channels_last = options["channels_last"]
        torch.backends.cudnn.benchmark = options["cudnn_benchmark"]  # a process-wide switch
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # in place: the optimizer keeps its params
        self.model = wrap_model(model, device, device_ids, options["compile"])
        # Epoch-based: one pass over the loader. Iteration-based: `len_epoch` optimizer steps,
        # the loader carrying on where the previous epoch stopped.
        self.iteration_based = options["len_epoch"] is not None
        if self.iteration_based:
            self.batches_per_epoch = options["len_epoch"] * self.accumulate_steps
        else:
            self.batches_per_epoch = len(data_loader)
        self.log_step = options["log_step"]
        self.on_nonfinite = options["on_nonfinite"]
        self.max_skipped = options["max_skipped"]
        self.skipped_in_a_row = 0
        self.progress_bar = options["progress_bar"] and is_main_process()
        self.train_metrics = MetricTracker("loss", *metric_fns)
        self._batches: Iterator | None = None  # iteration-based: the current pass
        self._passes = 0  # passes over the loader started (iteration-based epochs)
        self._pass_batches = 0  # batches taken from the current pass

    def logged_names(self) -> list[str]:
        names = ["loss", *self.metric_fns]
        return names + ["val_" + name for name in names] if self.valid_data_loader else names

    def _epoch_batches(self, epoch: int) -> Iterator:
        """This epoch's remaining batches (a resumed run skips those done without loading
        them); iteration-based epochs restart the loader when it runs out."""
        if not self.iteration_based:
            self.data_loader.set_epoch(epoch, skip_batches=self.batches_done)
            yield from self.data_loader
            return
        for _ in range(self.batches_per_epoch - self.batches_done):
            if self._batches is None:  # the first pass, or a resumed one
                self._passes = max(self._passes, 1)
                self.data_loader.set_epoch(self._passes, skip_batches=self._pass_batches)
                self._batches = iter(self.data_loader)
            batch = next(self._batches, None)
            if batch is None:
                self._passes, self._pass_batches = self._passes + 1, 0
                self.data_loader.set_epoch(self._passes)
                self._batches = iter(self.data_loader)
                batch = next(self._batches)
            self._pass_batches += 1
            yield batch

    def progress_state(self) -> dict[str, Any]:
        return {
            "train_metrics": self.train_metrics.state_dict(),
            "passes": self._passes,
            "pass_batches": self._pass_batches,
        }

    def load_progress_state(self, state: dict[str, Any]) -> None:
        self.train_metrics.load_state_dict(state["train_metrics"], self.device)
        self._passes, self._pass_batches = state["passes"], state["pass_batches"]

    def _no_sync(self, accumulating: bool) -> AbstractContextManager:
        """Under DDP, skip the gradient all-reduce for batches before the group's last one."""
        if accumulating and is_distributed():
            return self.model.no_sync()
        return nullcontext()

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        if self.batches_done == 0:
            self.train_metrics.reset()  # (a resumed epoch restored its totals instead)
        self.optimizer.zero_grad(set_to_none=True)
        learning_rate = self.optimizer.param_groups[0]["lr"]
        n_batches, group = self.batches_per_epoch, self.accumulate_steps
        bar = tqdm(
            self._epoch_batches(epoch),
            total=n_batches,
            initial=self.batches_done,
            desc=f"epoch {epoch}/{self.epochs}",
            disable=not self.progress_bar,
            leave=False,
            dynamic_ncols=True,
        )
        group_finite = True  # no non-finite loss in the current accumulation group
        for batch_index, (data, target) in enumerate(bar, start=self.batches_done):
            data = to_device(data, self.device, self.channels_last)  # (B, C, H, W)
            target = to_device(target, self.device, self.channels_last)  # (B,)
            group_end = (batch_index + 1) % group == 0 or batch_index + 1 == n_batches
            # Each batch's loss is averaged over its group; the last group of an epoch that
            # does not divide evenly is smaller, and averaged over its own size.
            group_size = min(group, n_batches - batch_index // group * group)
            with self._no_sync(not group_end):
                with autocast(self.device, self.precision):
                    output = self.model(data)  # (B, num_classes)
                    loss = self.criterion(output, target)
                finite = self._check_finite(loss, epoch, batch_index, batch_index // group * group)
                if finite:
                    self.scaler.scale(loss / group_size).backward()
                    with torch.no_grad():
                        track_batch(self.train_metrics, self.metric_fns, loss, output, target)
            group_finite = group_finite and finite
            if batch_index == 0:
                self.writer.images("train/input", data[:64], self.step + 1)
            self.batches_done = batch_index + 1
            if not group_end:
                continue
            if not group_finite:
                self._skip_update()
                group_finite = True
                continue
            self._optimizer_step()
            log_step = self.step % self.log_step == 0
            if log_step:
                window = self.train_metrics.flush()  # the means since the last log step
                self.writer.scalars({**window, "lr": learning_rate}, self.step, prefix="train/")
                bar.set_postfix(loss=f"{window['loss']:.4f}")
            # Under torchrun, whether to stop is agreed at log steps, where ranks sync anyway.
            self._after_step(check_stop=log_step or not is_distributed())
        log = self.train_metrics.result()
        if self.valid_data_loader is not None:
            log.update({"val_" + name: value for name, value in self._valid_epoch(epoch).items()})
        self.writer.scalars({**log, "lr": learning_rate}, self.step, prefix="epoch/")
        self.writer.histograms(self.bare_model, self.step)
        self._step_lr_scheduler(log)
        self.batches_done = 0
        return log

    def _check_finite(self, loss: torch.Tensor, epoch: int, batch: int, group_start: int) -> bool:
        """With `on_nonfinite` set, whether the loss is finite on every rank (one host sync).

        "stop" saves the state from before this accumulation group and raises.
        """
        if self.on_nonfinite is None:
            return True
        bad = (~torch.isfinite(loss.detach())).float().reshape(1)
        if not all_reduce_sum(bad).item():
            return True
        if self.on_nonfinite == "skip":
            return False
        self.batches_done = group_start  # a resumed run replays the group from its start
        saved = self._save_step() if self.run_dirs is not None else "no checkpoint (not rank 0)"
        raise TrainingFailed(
            f"non-finite loss at step {self.step + 1} (epoch {epoch}, batch {batch + 1}); "
            f"the last good state is in {saved}. Lower the learning rate, or set "
            "trainer.on_nonfinite to 'skip'"
        )

    def _skip_update(self) -> None:
        """on_nonfinite "skip": drop this group's update; give up after `max_skipped` in a row."""
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_in_a_row += 1
        logger.warning(
            "non-finite loss: skipped the update after step %d (%d in a row)",
            self.step,
            self.skipped_in_a_row,
        )
        if self.skipped_in_a_row >= self.max_skipped:
            raise TrainingFailed(
                f"trainer.max_skipped: {self.skipped_in_a_row} updates in a row had a "
                f"non-finite loss (after step {self.step}); the run is diverging"
            )

    def _optimizer_step(self) -> None:
        """Unscale (fp16) and clip the accumulated gradients, step, and clear them."""
        if self.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.bare_model.parameters(), self.clip_grad_norm)
        self.scaler.step(self.optimizer)  # skipped when fp16 gradients overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.skipped_in_a_row = 0

    def _valid_epoch(self, epoch: int) -> dict[str, float]:
        """Loss and metrics over the whole validation split."""
        description = f"epoch {epoch}/{self.epochs} valid"
        return evaluate(self.model, self.valid_data_loader, self.criterion, self.metric_fns,
                        self.device, description, self.progress_bar, self.precision,
                        self.channels_last)  # fmt: skip

    def _step_lr_scheduler(self, log: dict[str, float]) -> None:
        """Once per epoch; ReduceLROnPlateau watches the monitored value (else the loss)."""
        if self.lr_scheduler is None:
            return
        if isinstance(self.lr_scheduler, ReduceLROnPlateau):
            watched = self.monitor_metric or ("val_loss" if "val_loss" in log else "loss")
            self.lr_scheduler.step(log[watched])
        else:
            self.lr_scheduler.step()
