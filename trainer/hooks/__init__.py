"""Hooks a config can name in `trainer.hooks`: every `Hook` subclass defined in a module of
this package (add a file here for a hook of your own). The built-in ones are also made from
the trainer keys (`save_period`, `early_stop`, `tensorboard`, ...)."""

from trainer.hooks.checkpointer import Checkpointer
from trainer.hooks.csv_logger import CSVLogger
from trainer.hooks.early_stopping import EarlyStopping
from trainer.hooks.lr_scheduler_step import LRSchedulerStep
from trainer.hooks.progress_bar import ProgressBar
from trainer.hooks.stop_on_signal import StopOnSignal
from trainer.hooks.tensorboard_logger import TensorBoardLogger

__all__ = [
    "CSVLogger",
    "Checkpointer",
    "EarlyStopping",
    "LRSchedulerStep",
    "ProgressBar",
    "StopOnSignal",
    "TensorBoardLogger",
]
