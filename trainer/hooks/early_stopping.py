"""Stop when the monitored value has not improved for a while."""

import logging

from base import BaseTrainer, Hook

logger = logging.getLogger(__name__)


class EarlyStopping(Hook):
    """Ends the run after `early_stop` epochs without a new best of `trainer.monitor`."""

    def __init__(self, early_stop: int) -> None:
        self.early_stop = early_stop

    def after_epoch(self, trainer: BaseTrainer) -> None:
        if trainer.monitor.enabled and trainer.monitor.not_improved_count >= self.early_stop:
            count = trainer.monitor.not_improved_count
            logger.info("%s has not improved for %d epoch%s: stopping early.",
                        trainer.monitor.name, count, "s" if count > 1 else "")  # fmt: skip
            trainer.request_stop()
