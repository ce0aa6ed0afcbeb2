"""Evaluate a checkpoint on the test split: `python test.py -r saved/models/.../model_best.pth`.

The data loader, loss, metrics and the trainer's own hooks (an EMA hook evaluates its
averaged weights) come from the checkpoint's own config (or `-c`), with the loader switched
to the held-out test split; the results go to `test_metrics.json` beside the checkpoint.
"""

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from builder import build_data_loader, build_trainer, trainer_class, trainer_keys
from logger.logger import setup_logging
from utils.checkpoint import load_checkpoint, write_json
from utils.cli import ArgumentParser, add_config_options, run_main
from utils.config import load_run_config
from utils.device import select_device
from utils.errors import UserError

logger = logging.getLogger("test")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description="Evaluate a checkpoint on the test split.")
    parser.add_argument("-r", "--resume", required=True, help="checkpoint to evaluate")
    parser.add_argument("-c", "--config", help="config to use instead of the checkpoint's own")
    add_config_options(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    checkpoint = load_checkpoint(args.resume)
    config = load_run_config(args.config, checkpoint, args.override, trainer_keys)
    setup_logging(None, config["trainer"]["verbosity"])

    device, _ = select_device(args.device, config["n_gpu"])
    data_loader = build_data_loader(
        config, device, training=False, shuffle=False, validation_split=0.0
    )
    trainer_type = trainer_class(config["trainer"]["type"])
    if not trainer_type.evaluates():
        raise UserError(f"trainer.type: {trainer_type.__name__} has no validation_step to test")
    # The test split stands where the validation split stood, so the trainer and its hooks
    # see the names they saw in training (`val_*`).
    trainer = build_trainer(config, device, data_loader=data_loader,
                            valid_data_loader=data_loader, evaluation=True)  # fmt: skip
    trainer.load_weights(checkpoint)
    trainer.load_hook_states(checkpoint.get("hooks", {}))
    results = trainer.validate(data_loader)
    results["n_samples"] = len(data_loader.dataset)
    for name, value in results.items():
        logger.info("%-12s %.6g", name, value)
    output = Path(args.resume).parent / "test_metrics.json"
    summary = {"checkpoint": Path(args.resume).name, "epoch": checkpoint["epoch"], **results}
    write_json(output, summary)
    logger.info("wrote %s", output)
    return 0


if __name__ == "__main__":
    run_main(main)
