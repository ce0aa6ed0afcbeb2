"""Console and `info.log` logging for a run."""

import logging
import sys
from pathlib import Path

LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}


def setup_logging(log_dir: Path | None, verbosity: int) -> None:
    """Send project log records to the console and, when `log_dir` is given, to `info.log`.

    `verbosity` sets the console level (0 warnings, 1 info, 2 debug); the file always gets
    everything from info up, so a quiet console still leaves a full record on disk.
    """
    root = logging.getLogger()
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
        root.addHandler(file)
    # Third-party libraries keep their own, quieter level.
    for noisy in ("PIL", "matplotlib", "urllib3", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
