"""One training step on one real batch before a run starts, undone afterwards.

Config values can pass every check and still fail only when first used: a scheduler argument
at its first `step()`, a loss or metric argument in the first batch, a loss that does not fit
what the model outputs. The trial step meets them before the run directory exists and names
the config node at fault. Everything the step changed is then put back, so that the run
trains bit for bit as it would have without the trial.
"""

import copy
import functools
import inspect
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import CodeType
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

from base.epoch_batches import no_batch_message
from base.gradient_updates import GradientUpdates
from base.sharding import class_name
from utils.batch import to_device
from utils.config.check import metric_name, node_path
from utils.errors import TrainingFailed, UserError, error_summary
from utils.seed import get_rng_state, set_rng_state

if TYPE_CHECKING:
    from base.base_trainer import BaseTrainer

# A part of the run a failure can be traced to: (config node, what failed, what to check).
Part = tuple[str, str, str]


def run_trial_step(trainer: "BaseTrainer") -> None:
    """`train_step` on the first batch, `validation_step` on it (when the trainer evaluates)
    and one step of each LR scheduler, calling no hook. The loader's position is untouched:
    the batch comes from a fresh iterator, and the run sets the epoch before each pass."""
    parts = _parts(trainer)
    with _undone(trainer), warnings.catch_warnings():
        # The run's first step gives its warnings; the trial's would come before the log
        # exists, and would make a refusal more than one line. But a loss that broadcasts an
        # output and targets of different shapes ((B, 1) and (B,)) computes something else
        # than the user meant: an error, naming the loss.
        warnings.simplefilter("ignore")
        warnings.filterwarnings("error", "Using a target size .* different to the input size")
        batch = _first_batch(trainer)
        shapes = _describe(batch)
        updates = trainer.updates
        # The batch is a whole accumulation group, so the optimizers step; neither a gradient
        # norm nor the non-finite check is needed to see whether the parts fit together.
        updates.group_size, updates.group_end = 1, True
        updates.measure_grad_norms, updates.on_nonfinite = False, None
        trainer.batch = batch
        for model in trainer.models.values():
            model.train()
        with _reported(parts, "training", shapes):
            values = trainer.train_step(batch)
        _try_stateful_metrics(trainer, values, shapes)
        if trainer.evaluates():
            for model in trainer.models.values():
                model.eval()
            with _reported(parts, "validation", shapes), torch.no_grad():
                trainer.validation_step(batch)
        for name, scheduler in trainer.lr_schedulers.items():
            _step_scheduler(scheduler, node_path(trainer.config, "lr_scheduler", name))


def _try_stateful_metrics(trainer: "BaseTrainer", values: dict[str, Any], shapes: str) -> None:
    """Update and compute a copy of each stateful metric with the step's values: one that does
    not fit the output and targets, or computes more than one number, fails here."""
    nodes = trainer.config.get("metrics") or []
    named = {metric_name(node): i for i, node in enumerate(nodes)}
    for name, metric in trainer.stateful_metrics().items():
        where = f"metrics[{named[name]}]" if name in named else f"the metric {name!r}"
        kind = type(metric).__name__
        trial = copy.deepcopy(metric).to(trainer.device)
        try:
            trial.update(*values[name])
            value = trial.compute()
        except Exception as error:
            problem = f"does not fit the model output and targets of the batch ({shapes})"
            raise UserError(
                f"{where}: {kind} {problem}: {error_summary(error)}; check its args"
            ) from None
        if value.numel() != 1:
            raise UserError(f"{where}: {kind} computes {value.numel()} values; a logged metric "
                            "is one number (give it an average)")  # fmt: skip


@contextmanager
def _undone(trainer: "BaseTrainer") -> Iterator[None]:
    """On leaving, put back everything a training step changes, and the trainer's attributes
    (a subclass's own step counter too; an object changed in place is not). The copies are
    kept on the CPU, so that the trial needs no more GPU memory than a step of the run does."""
    rng, scaler, attributes = get_rng_state(), trainer.updates.scaler, dict(vars(trainer))
    tensors = [t for m in trainer.bare_models.values() for t in (*m.parameters(), *m.buffers())]
    values = [tensor.detach().to("cpu", copy=True) for tensor in tensors]
    grads = [None if t.grad is None else t.grad.detach().to("cpu", copy=True) for t in tensors]
    modes = [(m, m.training) for model in trainer.models.values() for m in model.modules()]
    states = [(o, _to_cpu(o.state_dict())) for o in trainer.optimizers.values()]
    states += [(s, copy.deepcopy(s.state_dict())) for s in trainer.lr_schedulers.values()]
    states += [(scaler, scaler.state_dict())] if scaler.is_enabled() else []
    # Set by the LR schedulers' wrapper of `optimizer.step`; read by their order warning.
    stepped = [(o, vars(o).get("_opt_called")) for o in trainer.optimizers.values()]
    # Which optimizers the scaler has unscaled or stepped since its last update: not in its
    # state_dict, and a step left "stepped" would refuse the run's first step.
    scaler_stages = copy.deepcopy(vars(scaler).get("_per_optimizer_states"))
    updates = {**vars(trainer.updates), "grad_norms": dict(trainer.updates.grad_norms)}
    try:
        yield
    finally:
        with torch.no_grad():
            for tensor, value, grad in zip(tensors, values, grads, strict=True):
                tensor.copy_(value)  # in place: optimizers and compiled graphs keep their tensors
                tensor.grad = None if grad is None else grad.to(tensor.device)
        for module, training in modes:
            module.training = training
        for part, state in states:
            part.load_state_dict(state)
        for optimizer, called in stepped:
            vars(optimizer).pop("_opt_called", None)
            if called is not None:
                optimizer._opt_called = called
        if scaler_stages is not None:
            scaler._per_optimizer_states = scaler_stages
        vars(trainer.updates).update(updates)
        vars(trainer).clear()
        vars(trainer).update(attributes)
        set_rng_state(rng)


def _to_cpu(state: Any) -> Any:
    """A copy of an optimizer's `state_dict()` on the CPU (`to_device` would not copy)."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {key: _to_cpu(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_to_cpu(value) for value in state)
    return state


def _first_batch(trainer: "BaseTrainer") -> Any:
    """The loader's first batch, on the device; a loader that cannot give one is a config error."""
    loader = trainer.batches.data_loader
    try:
        batch = next(iter(loader), None)  # the iterator, and any worker processes, end here
    except (UserError, TrainingFailed):
        raise
    except Exception as error:
        raise UserError(
            f"data_loader: reading the first batch failed: {error_summary(error)}; check "
            "data_loader.args and the data"
        ) from None
    if batch is None:
        raise UserError(no_batch_message(loader))
    return to_device(batch, trainer.device, trainer.channels_last)


def _step_scheduler(scheduler: Any, node: str) -> None:
    try:
        if isinstance(scheduler, ReduceLROnPlateau):
            scheduler.step(0.0)  # any value: the step is undone
        else:
            scheduler.step()
    except Exception as error:
        raise UserError(
            f"{node}: {type(scheduler).__name__}.step failed in a trial step before training: "
            f"{error_summary(error)}; check {node}.args"
        ) from None


@contextmanager
def _reported(parts: dict[CodeType, Part], step: str, shapes: str) -> Iterator[None]:
    """Turn a failure inside into a `UserError` that names the part whose code raised it."""
    try:
        yield
    except (UserError, TrainingFailed):
        raise
    except Exception as error:
        raise UserError(_message(error, parts, step, shapes)) from None


def _message(error: Exception, parts: dict[CodeType, Part], step: str, shapes: str) -> str:
    where = f"on the first {step} batch ({shapes}, tried before the run starts)"
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return (
            f"data_loader.args.batch_size: the first {step} step ran out of GPU memory; lower "
            "batch_size (trainer.accumulate_steps keeps the batch per optimizer step) or set "
            "trainer.amp"
        )
    # The outermost frame that is a part's own code: a model's forward inside the loss's
    # frame is not possible, but torch's functions inside the loss's are.
    for frame, _ in traceback.walk_tb(error.__traceback__):
        part = parts.get(frame.f_code)
        if part is not None:
            node, what, advice = part
            return f"{node}: {what} failed {where}: {error_summary(error)}; {advice}"
    return (
        f"the first {step} step failed ({shapes}, tried before the run starts): "
        f"{error_summary(error)}; likely arch, loss or metrics do not fit together or the "
        "batches data_loader gives"
    )


def _parts(trainer: "BaseTrainer") -> dict[CodeType, Part]:
    """The code of each configured part, by which a traceback shows where a failure came from
    (the loss and metrics: the `criterion` and `metric_fns` of the trainers that take them)."""
    config = trainer.config
    fits = "and that it fits what arch outputs and the batches' targets"
    parts: dict[CodeType | None, Part] = {
        _code(GradientUpdates.backward): ("loss", "the backward pass", f"check loss, {fits}")
    }
    for name, model in trainer.bare_models.items():
        node = node_path(config, "arch", name)
        what = f"{class_name(model)}.forward"
        parts[_code(model)] = (node, what, f"check {node}.args, and that it takes these batches")
    criterion = getattr(trainer, "criterion", None)
    if criterion is not None:
        parts[_code(criterion)] = ("loss", _name(criterion), f"check loss.args, {fits}")
    metric_types = [node["type"] for node in config.get("metrics") or []]
    for index, (name, metric) in enumerate(getattr(trainer, "metric_fns", {}).items()):
        node = f"metrics[{metric_types.index(name) if name in metric_types else index}]"
        parts[_code(metric)] = (node, name, f"check {node}.args, {fits}")
    for name, optimizer in trainer.optimizers.items():
        node = node_path(config, "optimizer", name)
        parts[_code(type(optimizer).step)] = (
            node, f"{type(optimizer).__name__}.step", f"check {node}.args"
        )  # fmt: skip
    parts.pop(None, None)
    return parts


def _code(function: Any) -> CodeType | None:
    """The code that runs when `function` is called (beneath partials, decorators, `forward`)."""
    while isinstance(function, functools.partial):
        function = function.func
    if isinstance(function, torch.nn.Module):
        function = type(function).forward
    return getattr(inspect.unwrap(function), "__code__", None)


def _name(function: Any) -> str:
    while isinstance(function, functools.partial):
        function = function.func
    return getattr(function, "__name__", type(function).__name__)


def _describe(batch: Any) -> str:
    """Shapes and dtypes of a batch's tensors: `(32, 1, 28, 28) float32, (32,) int64`."""
    if isinstance(batch, torch.Tensor):
        return f"{tuple(batch.shape)} {str(batch.dtype).removeprefix('torch.')}"
    if isinstance(batch, dict):
        return ", ".join(f"{key}: {_describe(value)}" for key, value in batch.items())
    if isinstance(batch, list | tuple):
        return ", ".join(_describe(value) for value in batch)
    return type(batch).__name__
