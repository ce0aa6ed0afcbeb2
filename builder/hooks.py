"""The hooks of a run: the built-in ones its trainer keys ask for, and the user's
`trainer.hooks`."""

import logging
from typing import Any

import trainer.hooks as hooks
from base import Hook
from trainer.hooks import (
    Checkpointer,
    CSVLogger,
    EarlyStopping,
    LRSchedulerStep,
    ProgressBar,
    StopOnSignal,
    TensorBoardLogger,
)
from utils.config.build import instantiate, is_subclass_of, lookup_in_package
from utils.errors import UserError

# The key that adds each built-in hook, for the message that refuses it in `trainer.hooks`.
ADDED_BY = {EarlyStopping: "trainer.early_stop", CSVLogger: "trainer.metrics_csv",
            TensorBoardLogger: "trainer.tensorboard", ProgressBar: "trainer.progress_bar",
            LRSchedulerStep: "lr_scheduler", Checkpointer: "trainer.save_period",
            StopOnSignal: "the trainer itself"}  # fmt: skip
BUILT_IN = tuple(ADDED_BY)

logger = logging.getLogger(__name__)


def build_hooks(config: dict, intervals: dict[str, str], evaluation: bool = False) -> list[Hook]:
    """The built-in hooks the trainer keys ask for, with the user's `trainer.hooks` placed
    before the ones that save (so a checkpoint includes their work) and log. metrics.csv is
    written just before the `Checkpointer` saves, so that a checkpoint never has an epoch
    whose row is not on disk. With `evaluation` (test.py), only the user's hooks that take
    part in an evaluation (`Hook.in_evaluation`): the built-in ones train, save and log a
    training run."""
    options = config["trainer"]
    before, after = ([], []) if evaluation else _built_in(options, intervals)
    added = {type(hook) for hook in before + after}
    user = []
    for index, node in enumerate(options["hooks"]):
        path = f"trainer.hooks[{index}]"
        hook_class = lookup_in_package(path, node["type"], hooks, _is_hook)
        if evaluation and not hook_class.in_evaluation:
            continue
        if hook_class in added:  # (the two would clash in the checkpoint)
            raise UserError(f"{path}: {hook_class.__name__} is a built-in hook, already added "
                            f"by {ADDED_BY[hook_class]}; set that key to configure it")  # fmt: skip
        user.append(_instantiate_hook(path, hook_class, node["args"]))  # arguments checked
    return [*before, *user, *after]


def _built_in(options: dict[str, Any], intervals: dict[str, str]) -> tuple[list, list]:
    """The built-in hooks that go before the user's, and those that go after them."""
    before = [LRSchedulerStep(intervals)] if intervals else []
    after = []
    if options["early_stop"] > 0:
        after.append(EarlyStopping(options["early_stop"]))
        if options["monitor"] == "off":  # (a run without validation may turn it off on purpose)
            logger.warning("trainer.early_stop: %d has no monitored value to count epochs "
                           "without improvement (trainer.monitor is 'off'); the run will not "
                           "stop early", options["early_stop"])  # fmt: skip
    after.append(StopOnSignal())
    if options["metrics_csv"]:
        after.append(CSVLogger())
    after.append(Checkpointer(options["save_period"], options["keep_last"],
                              options["save_every_steps"]))  # fmt: skip
    if options["tensorboard"]:
        after.append(TensorBoardLogger(options["log_images"]))
    if options["progress_bar"]:
        after.append(ProgressBar())
    return before, after


def _instantiate_hook(path: str, hook_class: type[Hook], args: dict) -> Hook:
    """`instantiate`, with the config path put before a hook's own one-line error (a missing
    optional package)."""
    try:
        hook = instantiate(path, hook_class, args)
    except UserError as error:
        message = str(error)
        raise UserError(message if message.startswith(path) else f"{path}: {message}") from None
    hook.config_path = path
    return hook


def _is_hook(value: Any) -> bool:
    return is_subclass_of(Hook)(value) and value is not Hook
