"""Where test.py's classification report goes: a table in the log, two PNGs beside the
checkpoint, and the same pictures in TensorBoard under the run's log directory."""

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from logger.evaluation_pictures import confusion_matrix_picture, mistakes_picture
from utils.checkpoint import atomic_write
from utils.classification_metrics import ClassificationReport
from utils.errors import UserError
from utils.run_dir import readable_path, run_dirs_at
from utils.worst_predictions import Mistakes

logger = logging.getLogger(__name__)

COLUMNS = ("precision", "recall", "f1", "accuracy")


def picture_paths(checkpoint: Path) -> dict[str, Path]:
    """The PNGs written beside `checkpoint`, by TensorBoard tag."""
    return {
        "test/confusion_matrix": checkpoint.with_name(f"{checkpoint.stem}.confusion_matrix.png"),
        "test/misclassified": checkpoint.with_name(f"{checkpoint.stem}.misclassified.png"),
    }


def tensorboard_dir(checkpoint: Path, config: dict) -> Path | None:
    """`test/` in the log directory of the run that `checkpoint` belongs to, when the run
    logs to TensorBoard and its log directory is there; else None (nothing is written)."""
    dirs = run_dirs_at(checkpoint.parent, config["name"])
    if dirs is None or not config["trainer"]["tensorboard"] or not dirs.log.is_dir():
        return None
    return dirs.log / "test"


def report_table(report: ClassificationReport, markdown: bool = False) -> str:
    """One row per class and a macro-average row: plain columns, or a Markdown table."""
    rows = [
        [row["name"], *(_number(row[key]) for key in COLUMNS), str(row["support"])]
        for row in report.per_class()
    ]
    macro = report.macro_average()
    rows.append(["macro average", *(_number(macro[key]) for key in COLUMNS),
                 str(macro["support"])])  # fmt: skip
    header = ["class", *COLUMNS, "support"]
    if markdown:
        lines = [header, ["---"] * len(header), *rows]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    width = max(len(line[0]) for line in [header, *rows])
    return "\n".join(
        f"{line[0]:<{width}}" + "".join(f"{value:>11}" for value in line[1:])
        for line in [header, *rows]
    )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def write_pictures(
    report: ClassificationReport,
    mistakes: Mistakes | None,
    checkpoint: Path,
    tensorboard_dir: Path | None,
    step: int,
) -> None:
    """Draw the confusion matrix and (given `mistakes`) the grid of mistakes, write each
    beside `checkpoint`, and into `tensorboard_dir` (a directory of its own, since
    TensorBoard reads each directory as one run) at `step`, with the per-class table."""
    total = int(report.confusion.sum())
    correct = int(report.confusion.trace())
    pictures = {
        "test/confusion_matrix": confusion_matrix_picture(
            report.confusion, report.class_names,
            f"{checkpoint.name} (step {step}): {correct} of {total} test samples right",
        ),
    }  # fmt: skip
    if mistakes is not None:
        title = (
            f"the {len(mistakes.target)} most confident mistakes: true class, predicted class "
            "and its probability"
        )
        if len(mistakes.target):
            pictures["test/misclassified"] = mistakes_picture(mistakes, report.class_names, title)
        else:
            logger.info("no grid of misclassified examples: every test sample is right")
    paths = picture_paths(checkpoint)
    for tag, picture in pictures.items():
        write_png(paths[tag], picture)
        logger.info("wrote %s", readable_path(paths[tag]))
    if tensorboard_dir is not None:
        _to_tensorboard(tensorboard_dir, pictures, report_table(report, markdown=True), step)
        logger.info("TensorBoard: %s under %s", ", ".join(pictures), readable_path(tensorboard_dir))


def write_png(path: Path, picture: Image.Image) -> None:
    """Write `picture` atomically; a failure is a `UserError` naming the file."""
    try:
        atomic_write(path, lambda file: picture.save(file, format="PNG"))
    except OSError as error:
        raise UserError(
            f"cannot write {path} ({error.strerror or error}); it needs {path.parent} "
            "writable, with free space"
        ) from None


def _to_tensorboard(directory: Path, pictures: dict[str, Image.Image], table: str,
                    step: int) -> None:  # fmt: skip
    from torch.utils.tensorboard import SummaryWriter  # slow import, only when used

    writer = SummaryWriter(str(directory))
    try:
        for tag, picture in pictures.items():
            writer.add_image(tag, np.asarray(picture), step, dataformats="HWC")
        writer.add_text("test/per_class", table, step)
    finally:
        writer.close()
