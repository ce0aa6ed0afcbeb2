"""Evaluate a checkpoint on the test split: `python test.py -r saved/models/.../model_best.pth`.

The data loader, loss and metrics come from the checkpoint's own config (or `-c`), with the
loader switched to the held-out test split; the results go to `test_metrics.json` beside
the checkpoint.
"""

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from logger.logger import setup_logging
from trainer.components import build_data_loader, build_loss, build_metrics, build_model
from trainer.trainer import evaluate
from utils.checkpoint import load_checkpoint, load_weights, write_json
from utils.cli import ArgumentParser, add_config_options, run_main
from utils.config import load_run_config
from utils.device import select_device
from utils.precision import amp_dtype

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
    config = load_run_config(args.config, checkpoint, args.override)
    setup_logging(None, config["trainer"]["verbosity"])

    device, _ = select_device(args.device, config["n_gpu"])
    data_loader = build_data_loader(
        config, device, training=False, shuffle=False, validation_split=0.0
    )
    model = build_model(config)
    load_weights(model, checkpoint)
    model.to(device)
    loss, metric_fns = build_loss(config), build_metrics(config)
    options = config["trainer"]
    precision = amp_dtype(options["amp"], device)
    results = evaluate(model, data_loader, loss, metric_fns, device, "test",
                       options["progress_bar"], precision)  # fmt: skip
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
