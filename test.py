"""Evaluate a checkpoint on the test split: `python test.py -r saved/models/NAME/RUN_ID`.

`-r` takes a checkpoint, or a run directory: its `model_best.pth`, else its newest checkpoint.
The data loader, loss, metrics and the trainer's own hooks (an EMA hook evaluates its
averaged weights) come from the checkpoint's own config (or `-c`), with the loader switched
to the held-out test split; the results go beside the checkpoint, in
`<checkpoint name>.test_metrics.json` (one file per checkpoint evaluated). With the reports
unit (logger/reports/), a report that fits the task joins them (`test.report`: a classifier's
per-class values, a regression's errors), its pictures as PNGs beside it (and in TensorBoard).
"""

# Before torch (seconds to import), Ctrl-C or SIGTERM ends the program with one line, not a
# traceback or a silent kill; only as a script, so that importing this leaves signals alone.
from utils.stop_signals import exit_on_stop_signals

if __name__ == "__main__":
    STOPPED = "before the test metrics were written"  # what the one line says
    exit_on_stop_signals(STOPPED, at_once=True)

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from base import BaseTrainer, EpochLoader
from builder import (
    build_data_loader,
    build_trainer,
    evaluation_report,
    reports_available,
    run_config,
    trainer_class,
)
from logger.logger import setup_logging
from trainer.hooks.ema import EMA
from utils.checkpoint.fields import naming_checkpoint
from utils.checkpoint.files import (
    check_writable,
    load_checkpoint,
    newest_checkpoint,
    runs_in,
    write_json,
)
from utils.cli import ArgumentParser, add_config_options, run_main
from utils.distributed import process_group
from utils.distributed.device import select_device
from utils.errors import UserError
from utils.run.dirs import readable_path

logger = logging.getLogger("test")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description="Evaluate a checkpoint on the test split.")
    parser.add_argument(
        "-r",
        "--resume",
        required=True,
        help="checkpoint to evaluate, or a run directory (its model_best.pth, else its newest "
        "checkpoint)",
    )
    parser.add_argument("-c", "--config", help="config to use instead of the checkpoint's own")
    if reports_available():
        parser.add_argument(
            "--worst",
            type=non_negative_int,
            default=36,
            metavar="N",
            help="how many of the worst test samples the report draws: a classifier's most "
            "confident mistakes, the worst reconstructions (default 36; 0 draws none)",
        )
    add_config_options(parser)
    return parser.parse_args(argv)


def non_negative_int(text: str) -> int:
    """An integer >= 0, for argparse."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected an integer >= 0")
    return int(text)


def checkpoint_to_evaluate(resume: str) -> tuple[Path, dict]:
    """The checkpoint `-r` names: a file, or a run directory's best (else newest) checkpoint."""
    path = Path(resume)
    if path.is_dir() and (path / "model_best.pth").is_file():
        path = path / "model_best.pth"
    elif path.is_dir():
        if not any(path.glob("checkpoint-*.pth")):
            raise UserError(f"-r {path}: no model_best.pth and no checkpoint-*.pth in this "
                            f"directory{runs_in(path)}")  # fmt: skip
        return newest_checkpoint(path)
    return path, load_checkpoint(path)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if process_group.launched_by_torchrun():  # every rank would evaluate the whole split
        raise UserError("test.py evaluates in one process, not shared out by torchrun; run it "
                        f"as python test.py -r {args.resume}")  # fmt: skip
    path, checkpoint = checkpoint_to_evaluate(args.resume)
    config = run_config(args.config, args.override, checkpoint, path)
    setup_logging(None, config["trainer"]["verbosity"])
    output = path.with_name(f"{path.stem}.test_metrics.json")
    check_writable(output)  # now, rather than after an evaluation that may take long
    trainer_type = trainer_to_test(config)
    report = None
    if reports_available():  # the reports unit; its pictures' paths are checked now too
        report = evaluation_report(config, trainer_type, path, args.worst)

    trainer, batches = evaluating_trainer(config, args.device, path, checkpoint)
    n_samples = len(batches.dataset)
    if report is not None:  # one pass: the report sees each batch and the model's output on it
        batches = report.watch(trainer.models.get("model"), batches)
    results = trainer.validate(batches)
    results["n_samples"] = n_samples
    width = max(map(len, results))
    for name, value in results.items():
        logger.info("%-*s %.6g", width, name, value)
    step = checkpoint["step"]
    summary = {"checkpoint": path.name, "epoch": checkpoint["epoch"], "step": step,
               "weights": evaluated_weights(trainer), **results}  # fmt: skip
    if report is not None and (entry := report.finish(step)) is not None:
        summary["report"] = entry
    write_json(output, summary)
    logger.info("wrote %s", readable_path(output))
    if report is not None:
        report.write(config, step)
    return 0


def trainer_to_test(config: dict) -> type[BaseTrainer]:
    """The trainer class the config names, which must have a validation step."""
    trainer_type = trainer_class(config["trainer"]["type"])
    if not trainer_type.evaluates():
        raise UserError(f"trainer.type: {trainer_type.__name__} has no validation_step to test")
    return trainer_type


def evaluated_weights(trainer: BaseTrainer) -> str:
    """Whose weights were evaluated: an `EMA` hook's averaged ones (by its state key), or the
    checkpoint's own (`state_dict`)."""
    averaged = [h for h in trainer.hooks if isinstance(h, EMA) and h.evaluate and h.shadow]
    return averaged[0].state_key if averaged else "state_dict"


def evaluating_trainer(
    config: dict, requested_device: str | None, path: Path, checkpoint: dict
) -> tuple[BaseTrainer, EpochLoader]:
    """The trainer with the checkpoint's weights and hook states, and the test split's loader.
    The test split stands where the validation split stood, so the trainer and its hooks see
    the names they saw in training (`val_*`)."""
    device, _ = select_device(requested_device, config["n_gpu"])
    loader = build_data_loader(config, device, training=False, shuffle=False, validation_split=0.0)
    trainer = build_trainer(config, device, data_loader=loader, valid_data_loader=loader,
                            evaluation=True)  # fmt: skip
    with naming_checkpoint(path):  # a malformed field names the file
        trainer.load_weights(checkpoint)
        left_out = {node["type"] for node in config["trainer"]["hooks"]} - {
            type(hook).__name__ for hook in trainer.hooks
        }  # the config's hooks that take no part in an evaluation
        trainer.load_hook_states(checkpoint.get("hooks", {}), left_out)
    epochs = f"{checkpoint['epoch']} epoch{'s' if checkpoint['epoch'] != 1 else ''} done"
    logger.info("evaluating %s (step %d, %s) on the test split",
                readable_path(path), checkpoint["step"], epochs)  # fmt: skip
    return trainer, loader


if __name__ == "__main__":
    exit_on_stop_signals(STOPPED)  # imported: unwind from now on
    run_main(main)
