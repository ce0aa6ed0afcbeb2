"""Where test.py's report goes: a table in the log, PNGs beside the checkpoint, and the same
pictures and table in TensorBoard under the run's log directory."""

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from logger.reports.report import ReportResult
from utils.checkpoint.files import atomic_write
from utils.errors import UserError
from utils.run.dirs import readable_path, run_dirs_at

logger = logging.getLogger(__name__)


def picture_paths(checkpoint: Path, names: Iterable[str]) -> dict[str, Path]:
    """The PNG each named picture is written to beside `checkpoint`."""
    return {name: checkpoint.with_name(f"{checkpoint.stem}.{name}.png") for name in names}


def remove_stale(pictures: dict[str, Path], drawn: Iterable[str]) -> None:
    """Remove the pictures (by name) that an earlier evaluation of the checkpoint drew and this
    one does not (another kind of report, none, no mistakes left), so that the pictures
    beside it are those of its test_metrics.json."""
    for name, path in pictures.items():
        if name not in drawn and path.is_file():
            path.unlink()
            logger.info("removed %s, drawn by an earlier evaluation", readable_path(path))


def tensorboard_dir(checkpoint: Path, config: dict) -> Path | None:
    """`test/` in the log directory of the run that `checkpoint` belongs to, when the run
    logs to TensorBoard and its log directory is there; else None (nothing is written)."""
    dirs = run_dirs_at(checkpoint.parent, config["name"])
    if dirs is None or not config["trainer"]["tensorboard"] or not dirs.log.is_dir():
        return None
    return dirs.log / "test"


def table(rows: list[list[str]], markdown: bool = False) -> str:
    """A header and rows as plain columns (the first left-aligned), or as a Markdown table."""
    if markdown:
        lines = [rows[0], ["---"] * len(rows[0]), *rows[1:]]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    widths = [max(len(line[column]) for line in rows) for column in range(len(rows[0]))]
    return "\n".join(
        f"{line[0]:<{widths[0]}}"
        + "".join(
            f"{value:>{width + 3}}" for value, width in zip(line[1:], widths[1:], strict=True)
        )
        for line in rows
    )


def write_report(
    report: ReportResult, kind: str, checkpoint: Path, tensorboard_dir: Path | None, step: int
) -> None:
    """Write each picture beside `checkpoint`, and the pictures and the table into
    `tensorboard_dir` (a directory of its own, since TensorBoard reads each directory as one
    run) at `step`: as `test/<picture name>`, and the table as `test/<kind>`."""
    paths = picture_paths(checkpoint, report.pictures)
    for name, picture in report.pictures.items():
        write_png(paths[name], picture)
        logger.info("wrote %s", readable_path(paths[name]))
    if tensorboard_dir is not None:
        from torch.utils.tensorboard import SummaryWriter  # slow import, only when used

        writer = SummaryWriter(str(tensorboard_dir))
        try:
            for name, picture in report.pictures.items():
                writer.add_image(f"test/{name}", np.asarray(picture), step, dataformats="HWC")
            writer.add_text(f"test/{kind}", table(report.rows, markdown=True), step)
        finally:
            writer.close()
        tags = ", ".join(f"test/{name}" for name in [*report.pictures, kind])
        logger.info("TensorBoard: %s under %s", tags, readable_path(tensorboard_dir))


def write_png(path: Path, picture: Image.Image) -> None:
    """Write `picture` atomically; a failure is a `UserError` naming the file."""
    try:
        atomic_write(path, lambda file: picture.save(file, format="PNG"))
    except OSError as error:
        raise UserError(
            f"cannot write {path} ({error.strerror or error}); it needs {path.parent} "
            "writable, with free space"
        ) from None
