"""Trainers a config can name in `trainer.type`: every `BaseTrainer` subclass defined in a
module of this package (add a file here for a trainer of your own)."""

from trainer.trainer import Trainer

__all__ = ["Trainer"]
