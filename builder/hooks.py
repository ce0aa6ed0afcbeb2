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
    user = []
    for index, node in enumerate(options["hooks"]):
        path = f"trainer.hooks[{index}]"
        hook_class = lookup_in_package(path, node["type"], hooks, _is_hook)
        if evaluation and not hook_class.in_evaluation:
            continue
        user.append(_instantiate_hook(path, hook_class, node["args"]))  # arguments checked
    if evaluation:
        return user
    built = [LRSchedulerStep(intervals)] if intervals else []
    built += user
    if options["early_stop"] > 0:
        built.append(EarlyStopping(options["early_stop"]))
        if options["monitor"] == "off":  # (a run without validation may turn it off on purpose)
            logger.warning("trainer.early_stop: %d has no monitored value to count epochs "
                           "without improvement (trainer.monitor is 'off'); the run will not "
                           "stop early", options["early_stop"])  # fmt: skip
    built.append(StopOnSignal())
    if options["metrics_csv"]:
        built.append(CSVLogger())
    built.append(Checkpointer(options["save_period"], options["keep_last"],
                              options["save_every_steps"]))  # fmt: skip
    if options["tensorboard"]:
        built.append(TensorBoardLogger(options["log_images"]))
    if options["progress_bar"]:
        built.append(ProgressBar())
    _refuse_built_in_twice(user, built)
    return built


def _refuse_built_in_twice(user: list[Hook], built: list[Hook]) -> None:
    """A built-in hook in `trainer.hooks` that its trainer key adds too: one line naming the
    key (the two would clash in the checkpoint)."""
    added = {type(hook) for hook in built if not any(hook is own for own in user)}
    for index, hook in enumerate(user):  # (outside test.py, `user` is every node's hook)
        if type(hook) in added:
            raise UserError(f"trainer.hooks[{index}]: {type(hook).__name__} is a built-in hook, "
                            f"already added by {ADDED_BY[type(hook)]}; set that key to "
                            "configure it")  # fmt: skip


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
