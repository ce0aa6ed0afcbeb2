"""metrics.csv: one row per epoch in the run's log directory, continued on resume."""

import csv
import io
import logging
import time
from pathlib import Path

from base import BaseTrainer, Hook
from trainer.hooks.tensorboard_logger import learning_rates
from utils.checkpoint.files import atomic_write

logger = logging.getLogger(__name__)

FIRST_COLUMNS = ["epoch", "step", "wall_time"]


class CSVLogger(Hook):
    """Writes `<log dir>/metrics.csv`: per epoch, its number, the optimizer step and Unix time
    it ended at, and TensorBoard's `epoch/*`: its log (`loss`, metrics, `val_*`), learning rates.

    The whole file is rewritten after each epoch (a temporary file renamed over it), so a crash
    never leaves a half row, and a value that first appears in a later epoch widens the header
    (earlier rows leave its cell empty). It stays small: a thousand epochs of ten values are
    about 230 kB, rewritten in tens of milliseconds.

    A resumed run keeps the rows of the epochs its checkpoint had completed and drops those an
    attempt that went further wrote; a run started again without a checkpoint starts afresh.
    It comes before the `Checkpointer` (builder/hooks.py), so a crash between them loses no row.
    """

    def __init__(self) -> None:
        self.path: Path | None = None  # None on ranks that do not write
        self.columns: list[str] = []
        self.rows: list[dict[str, str]] = []

    def before_train(self, trainer: BaseTrainer) -> None:
        if trainer.run_dirs is None:
            return
        self.path = trainer.run_dirs.log / "metrics.csv"
        columns, rows = read_rows(self.path)
        self.rows = [row for row in rows if completed_epoch(row, trainer.epoch)]
        used = {name for row in self.rows for name, value in row.items() if value}
        self.columns = FIRST_COLUMNS + [c for c in columns if c in used - set(FIRST_COLUMNS)]
        if len(self.rows) < len(rows):
            logger.info("metrics.csv: dropped the rows of epochs after %d, which this run "
                        "redoes from its checkpoint", trainer.epoch)  # fmt: skip
            self._write()

    def after_epoch(self, trainer: BaseTrainer) -> None:
        if self.path is None:
            return
        values = {**trainer.epoch_log, **learning_rates(trainer)}
        row = {"epoch": str(trainer.epoch), "step": str(trainer.step)}
        row["wall_time"] = f"{time.time():.3f}"
        row.update({name: repr(float(value)) for name, value in values.items()})
        self.columns += [name for name in row if name not in self.columns]
        self.rows.append(row)
        self._write()

    def _write(self) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, self.columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write(self.path, lambda file: file.write(text.getvalue().encode()))


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of an existing metrics.csv (one that cannot be read was refused
    before the resumed run changed anything: `take_run_dirs`); none when there is no file."""
    if not path.exists():
        return [], []
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


def completed_epoch(row: dict[str, str], epochs_done: int) -> bool:
    """Whether `row` is of one of the `epochs_done` epochs a resumed run starts after (a row
    whose epoch is not a number is not)."""
    epoch = row.get("epoch") or ""
    return epoch.isdigit() and int(epoch) <= epochs_done
