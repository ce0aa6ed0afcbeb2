"""A trainer's checkpoint: everything that changes during a run, as tensors and plain data."""

import functools
import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

from base.epoch_batches import BatchFailed
from base.gradient_updates import NonFiniteLoss
from base.metric_tracker import MetricTracker
from base.monitor import Monitor
from base.sharding import class_name, fsdp, full_optimizer_state, full_weights, is_sharded
from utils.checkpoint.fields import FieldError
from utils.checkpoint.files import save_checkpoint
from utils.checkpoint.saved_states import load_like, load_optimizer_state, load_weights
from utils.distributed.process_group import barrier, is_distributed, rank
from utils.errors import TrainingFailed, UserCodeFailed, error_summary
from utils.run.dirs import RunDirs
from utils.seed import get_rng_state, set_rng_state

logger = logging.getLogger(__name__)

SINGLE = ("model",)  # a trainer of one model keeps the flat checkpoint layout


class TrainerState:
    """What a `BaseTrainer` has done so far: its start, its checkpoint (`state_dict`, see the
    README's checkpoint table) and a resumed run's `load_state_dict`.

    Models, optimizers and schedulers are stored by name (`{"generator": ..., ...}`); a
    trainer whose only model is `model` stores each one directly, as before names existed.
    """

    def start_state(self, monitor: str) -> None:
        """The state of a run that has trained nothing yet, which hooks read."""
        self.monitor = Monitor(monitor, self.logged_names())
        self.tracker = MetricTracker(self.stateful_metrics(), self.device)  # the current epoch's
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.batch: Any = None  # the batch being trained on, on the device
        self.step_samples = 0  # samples this rank trained on in the last step
        self.window: dict[str, float] | None = None  # at log steps: means since the epoch's last
        self.epoch_log: dict[str, float] = {}  # the last epoch's means (val_ for validation)
        self.run_dirs: RunDirs | None = None  # None on ranks that do not write
        self.failure: BaseException | None = None  # what ended the run, if not its normal end
        self.group_start: dict[str, int] = {}  # the position before the current group of batches
        self._rng_state: dict | None = None  # a loaded checkpoint's, until `train` restores it

    def save(self, filename: str) -> Path | None:
        """Write the checkpoint as `filename` in the run directory (atomically). Every rank
        calls it: under torchrun the ranks' pending metric totals are summed and their metric
        states gathered first, so that the checkpoint holds all of them; only the writing rank
        writes (the others get None), and all wait until it has written."""
        if is_distributed():
            self.tracker.gather()
        path = None
        # A sharded model's full state is gathered by every rank together.
        sharded = any(is_sharded(model) for model in self.bare_models.values())
        state = self.state_dict() if self.run_dirs is not None or sharded else None
        if self.run_dirs is not None:
            path = self.run_dirs.models / filename
            save_checkpoint(state, path)
            logger.info("saved %s", path)
        barrier()  # no rank goes on before it is written (a rank that exits ends the others)
        return path

    def group_position(self) -> dict[str, Any]:
        """Where the next group starts (and, in groups of several batches, the generators)."""
        rng = {"rng": get_rng_state()} if self.updates.accumulate_steps > 1 else {}
        return {**self.batches.position(), **rng}

    def save_for_resume(self, error: BatchFailed | NonFiniteLoss) -> TrainingFailed:
        """Save the state from before the current group of batches as a step checkpoint (that
        state is whole, and a resumed run replays the group); the error that ends the run.
        Under torchrun a data error is one rank's, while the others are mid-step: none of
        them could join in a save, so nothing is saved."""
        epoch, batch = self.epoch + 1, self.batches.batches_done + 1
        self.batches.load_position(self.group_start)
        if "rng" in self.group_start:  # the group's earlier batches drew from them since
            set_rng_state(self.group_start["rng"])
        if isinstance(error, BatchFailed):  # the user's data: the entry script shows its traceback
            raised = f"the data loader raised {error.summary()} at epoch {epoch}, batch {batch}"
            if is_distributed():
                return UserCodeFailed(f"{raised}, on rank {rank()} (its traceback is above); the "
                                      "other ranks were mid-step, so nothing was saved: fix the "
                                      "data, then resume from the run's newest checkpoint (-r "
                                      "RUN_DIR)")  # fmt: skip
            saved = self.save(f"checkpoint-step{self.step}.pth")
            return UserCodeFailed(f"{raised} (its traceback is above); the last step's state is "
                                  f"in {saved}: fix the data, then resume with python train.py "
                                  f"-r {saved}")  # fmt: skip
        saved = self.save(f"checkpoint-step{self.step}.pth") or "no checkpoint (not rank 0)"
        return TrainingFailed(  # `on_nonfinite: "stop"`
            f"non-finite loss at step {self.step + 1} (epoch {epoch}, batch {batch}); the state "
            f"before it is in {saved}, but its weights may have blown up already (look for an "
            "earlier checkpoint). Lower the learning rate, or set trainer.on_nonfinite to 'skip'"
        )

    def _pack(self, states: dict[str, Any]) -> Any:
        return states["model"] if tuple(self.bare_models) == SINGLE else states

    def _unpack(self, state: Any) -> dict[str, Any]:
        return {"model": state} if tuple(self.bare_models) == SINGLE else state

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint: loads with `torch.load(..., weights_only=True)`."""
        models, scaler, position = self.bare_models, self.updates.scaler, self.batches.position()
        hooks = {hook.state_key: hook.state_dict() for hook in self.hooks}
        schedulers = {name: s.state_dict() for name, s in self.lr_schedulers.items()}
        optimizers = {
            name: full_optimizer_state(models[name], o) for name, o in self.optimizers.items()
        }
        return {
            "arch": self._pack({name: class_name(m) for name, m in models.items()}),
            "epoch": self.epoch,
            "step": self.step,
            "state_dict": self._pack({name: full_weights(m) for name, m in models.items()}),
            "optimizer": self._pack(optimizers),
            "lr_scheduler": (self._pack(schedulers) if schedulers else None),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            **self.monitor.state_dict(),
            "config": self.config,
            "rng": get_rng_state(),
            "batches_done": position.pop("batches_done"),
            "progress": {"train_metrics": self.tracker.state_dict(), **position},
            "hooks": {key: state for key, state in hooks.items() if state},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the run a checkpoint came from: weights, optimizers, schedules, scaler,
        counters, position in the epoch, monitor, hooks and (at `train`) the RNG.

        The fields are those `load_checkpoint` checked; what only the built parts can tell
        (shapes, parameter groups, the schedules' and scaler's layouts, the epoch's length)
        is checked here, each as a `FieldError` naming the field.
        """
        saved = {"batches_done": state["batches_done"], **state["progress"]}
        position = self.batches.in_this_world(saved, self.updates.accumulate_steps)
        if position["batches_done"] > self.batches.batches_per_epoch:
            problem = (
                f"{position['batches_done']} is more than the {self.batches.batches_per_epoch} "
                "batches of an epoch of this run (data_loader or trainer.len_epoch changed?)"
            )
            raise FieldError("batches_done", problem)
        self.load_weights(state)
        self._load_optimizers(self._unpack(state["optimizer"]))
        saved = state["lr_scheduler"]
        schedulers = self._unpack(saved) if saved is not None else {}
        for name, scheduler in self.lr_schedulers.items():
            if name not in schedulers:
                problem = "missing, but this run has a schedule (lr_scheduler) to restore"
                raise FieldError(self._field("lr_scheduler", name), problem)
            load_like(scheduler, schedulers[name], self._field("lr_scheduler", name))
        if self.updates.scaler.is_enabled() and state["scaler"] is not None:
            load_like(self.updates.scaler, state["scaler"], "scaler")
        self.epoch, self.step = state["epoch"], state["step"]
        self.batches.load_position(position)
        self.tracker.load_state_dict(state["progress"]["train_metrics"], self.device)
        saved_monitor = state["config"]["trainer"].get("monitor", "off")  # (its default)
        if saved_monitor == self.config["trainer"]["monitor"]:
            self.monitor.load_state_dict(state)
        self.load_hook_states(state.get("hooks", {}))
        self._rng_state = state["rng"]

    def _load_optimizers(self, states: dict[str, Any]) -> None:
        """Each optimizer's saved state; a sharded model's optimizer loads the full state."""
        for name, optimizer in self.optimizers.items():
            if name not in states:
                raise FieldError(self._field("optimizer", name), "missing")
            model, load = self.bare_models[name], None
            if is_sharded(model):
                load = functools.partial(fsdp().load_full_optimizer_state, model, optimizer)
            load_optimizer_state(optimizer, states[name], self._field("optimizer", name), load)

    def _field(self, key: str, name: str) -> str:
        """The checkpoint field of one model's state: `key`, or `key.name` (several models)."""
        return key if tuple(self.bare_models) == SINGLE else f"{key}.{name}"

    def load_hook_states(self, states: dict[str, Any], left_out: Collection[str] = ()) -> None:
        """Give each hook its saved state; a state no hook claims is named in a warning, but
        for the hook classes `left_out` on purpose (of an evaluation: `Hook.in_evaluation`)."""
        for hook in self.hooks:
            if hook.state_key in states:
                try:
                    hook.load_state_dict(states[hook.state_key])
                except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as error:
                    problem = f"{type(hook).__name__} cannot load it ({error_summary(error)})"
                    raise FieldError(f"hooks[{hook.state_key!r}]", problem) from None
        unclaimed = set(states) - {hook.state_key for hook in self.hooks}
        unfed = {type(h).__name__: h.state_key for h in self.hooks if h.state_key not in states}
        for key in sorted(unclaimed):
            kind = key.split("(")[0]  # a state key starts with its class name
            if kind in unfed:  # the same hook with other arguments: a state is not theirs
                logger.warning("the checkpoint holds the state of hook %s; this run's %s, with "
                               "other arguments, starts afresh", key, unfed[kind])  # fmt: skip
            elif kind not in left_out:
                logger.warning("the checkpoint holds the state of hook %s, which this run lacks",
                               key)  # fmt: skip

    def load_weights(self, state: dict[str, Any]) -> None:
        """Load only the model weights (fine-tuning from a checkpoint with a new config)."""
        weights = self._unpack(state["state_dict"])
        for name, model in self.bare_models.items():
            if name not in weights:
                raise FieldError(self._field("state_dict", name), "missing")
            load = functools.partial(fsdp().load_full_weights, model) if is_sharded(model) else None
            load_weights(model, weights[name], self._field("state_dict", name), load)

    def restore_rng(self) -> None:
        """Put back the random generators of a loaded checkpoint (once, when training starts)."""
        if self._rng_state is not None:
            set_rng_state(self._rng_state)
            self._rng_state = None
