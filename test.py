"""Evaluate a checkpoint on the test split: `python test.py -r saved/models/.../model_best.pth`.

The data loader, loss and metrics come from the checkpoint's own config (or `-c`), with the
loader switched to the held-out test split; the results go to `test_metrics.json` beside
the checkpoint.
"""

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from logger.logger import setup_logging
from trainer.components import build_data_loader, build_loss, build_metrics, build_model
from utils.checkpoint import load_checkpoint, load_weights, write_json
from utils.cli import ArgumentParser, add_config_options, run_main
from utils.config import apply_overrides, load_config_file, resolve_config
from utils.device import select_device
from utils.errors import UserError
from utils.metric_tracker import MetricTracker

logger = logging.getLogger("test")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description="Evaluate a checkpoint on the test split.")
    parser.add_argument("-r", "--resume", required=True, help="checkpoint to evaluate")
    parser.add_argument("-c", "--config", help="config to use instead of the checkpoint's own")
    add_config_options(parser)
    return parser.parse_args(argv)


@torch.no_grad()
def evaluate(
    model, data_loader, criterion, metric_fns, device, progress_bar: bool
) -> dict[str, float]:
    """Sample-weighted mean loss and metrics of `model` over every batch of `data_loader`."""
    model.eval()
    tracker = MetricTracker("loss", *metric_fns)
    for data, target in tqdm(data_loader, desc="test", disable=not progress_bar, leave=False):
        data, target = data.to(device, non_blocking=True), target.to(device, non_blocking=True)
        output = model(data)
        tracker.update("loss", criterion(output, target), n=len(target))
        for name, metric in metric_fns.items():
            tracker.update(name, metric(output, target), n=len(target))
    return tracker.result()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    checkpoint = load_checkpoint(args.resume)
    raw_config = load_config_file(args.config) if args.config else checkpoint["config"]
    config = resolve_config(apply_overrides(raw_config, args.override))
    if checkpoint["arch"] != config["arch"]["type"]:
        raise UserError(
            f"arch.type: the checkpoint holds a {checkpoint['arch']!r} model, "
            f"not {config['arch']['type']!r}"
        )
    setup_logging(None, config["trainer"]["verbosity"])

    device, _ = select_device(args.device, config["n_gpu"])
    data_loader = build_data_loader(config, training=False, shuffle=False, validation_split=0.0)
    model = build_model(config)
    load_weights(model, checkpoint)
    model.to(device)
    results = evaluate(
        model,
        data_loader,
        build_loss(config),
        build_metrics(config),
        device,
        config["trainer"]["progress_bar"],
    )
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
