"""Console and `info.log` logging for a run."""

import logging
import sys
from pathlib import Path

LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}


class HeldRecords(logging.Handler):
    """Keeps the records logged while a run is built, before its directory exists, for the
    `info.log` that the next `setup_logging` call opens."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def setup_logging(log_dir: Path | None, verbosity: int, hold: bool = False) -> None:
    """Send log records to the console at `LEVELS[verbosity]` and, given `log_dir`, to
    `info.log`, which always gets info and up: a quiet console still leaves a full record. With
    `hold`, the records are also kept until a later call gives `log_dir`, and written first
    into its `info.log` (what the builder logged: frozen parameters, parameter groups)."""
    root = logging.getLogger()
    held = [r for h in root.handlers if isinstance(h, HeldRecords) for r in h.records]
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.DEBUG)
    console = logging.StreamHandler(sys.stdout)
    console.setLevel(LEVELS[verbosity])
    console.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(console)
    if log_dir is not None:
        file = logging.FileHandler(Path(log_dir) / "info.log")
        file.setLevel(min(logging.INFO, LEVELS[verbosity]))
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for record in held:
            file.handle(record)
        root.addHandler(file)
    if hold:
        root.addHandler(HeldRecords())
    # Third-party libraries keep their own, quieter level.
    for noisy in ("PIL", "matplotlib", "urllib3", "h5py", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
