"""The default config on a CPU: our Trainer, built exactly as train.py builds it, against the
same run written by hand in plain PyTorch.

    python benchmarks/cpu_default.py [--epochs 8] [--rounds 5] [--save-dir DIR]

Both contenders train config/config.json's run: LeNet on the bundled MNIST subset (3,600
training and 400 validation images, the same held-out split), batches of 128 reshuffled
every epoch by a torch DataLoader with 2 workers, Adam (amsgrad), nll_loss, StepLR, the same
seed. Per epoch both compute loss, accuracy and top-3 accuracy on every training batch, run
a validation pass, print an epoch line, and save checkpoints at the config's cadence:
model_best.pth whenever val_loss improves, checkpoint-epochN.pth every `save_period` epochs
and at the last.

What only ours does on top (so the ratio is the price of it): tqdm progress bars, the log
line also written to info.log, TensorBoard (scalars every 10 steps, an image grid and a
histogram of every parameter each epoch), and checkpoints that also hold the scheduler,
RNG and monitor state and are written atomically (temporary file, fsync, rename). The
hand-written loop saves `torch.save({model, optimizer})` and prints its epoch line. Both
draw the same random numbers in the same order, so their epoch lines agree digit for digit:
a check that they compute the same thing.

Timing: an epoch lasts from its start to the next epoch's start (the last one until
training returns), so validation, logging and checkpoints are in it for both. Ours is
timed by wrapping the trainer's `_train_epoch` (its code runs unchanged) inside one
`trainer.train(run_dirs)` call, as train.py makes it. Building the run (config, data,
model, run directory, TensorBoard writer) is outside the epochs for both; the first epoch
of every run is discarded. samples/s = training samples of the remaining epochs divided by
their wall time (validation included). The contenders alternate in rounds; the table gives
the median over rounds, and the median of the per-round ratios ours / hand-written.

Not part of the test suite. The default (8 epochs, 5 rounds) takes about 3-4 minutes on 2
CPU cores.
"""

# The imports after the sys.path line need the repository root on the path:
# ruff: noqa: E402
import argparse
import math
import sys
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # train.py and the template's packages, from any directory

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

import train
from base.base_data_loader import split_indices
from benchmarks.common import (
    Contender,
    EpochClock,
    describe_machine,
    load_average,
    results_table,
    run_rounds,
    time_trainer,
)
from data_loader.mnist5k import load_mnist5k
from model.metric import accuracy, top_k_acc
from model.model import LeNet
from utils.config import load_config_file, resolve_config
from utils.seed import seed_everything

CONFIG = ROOT / "config" / "config.json"
DATA_DIR = ROOT / "data"
# What the hand-written loop implements; if config.json changes, the loop must change too.
EXPECTED = {
    "arch": "LeNet",
    "data_loader": "Mnist5kDataLoader",
    "optimizer": "Adam",
    "loss": "nll_loss",
    "lr_scheduler": "StepLR",
    "metrics": ["accuracy", "top_k_acc"],
    "monitor": "min val_loss",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs", type=int, default=8, help="epochs per run (the first is discarded)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of all contenders")
    parser.add_argument("--save-dir", help="where runs write (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.epochs < 2 or args.rounds < 1:
        parser.error("need --epochs >= 2 (the first is discarded) and --rounds >= 1")
    return args


def check_config(config: dict) -> None:
    """Stop if config.json no longer names what the hand-written loop implements."""
    found = {
        "arch": config["arch"]["type"],
        "data_loader": config["data_loader"]["type"],
        "optimizer": config["optimizer"]["type"],
        "loss": config["loss"]["type"],
        "lr_scheduler": (config["lr_scheduler"] or {}).get("type"),
        "metrics": [node["type"] for node in config["metrics"]],
        "monitor": config["trainer"]["monitor"],
    }
    if found != EXPECTED or any(node["args"] for node in config["metrics"]):
        sys.exit(f"{CONFIG} changed ({found}); update the hand-written loop in {__file__}")


def ours(epochs: int, save_dir: Path, clock: EpochClock) -> None:
    """train.py's path: `build(parse_args(...))`, then one `trainer.train(run_dirs)`.

    `pin_memory=false` is what the config's `null` means on a machine without CUDA; on a GPU
    machine `null` would pin batches even for `-d cpu`, which the hand-written loop does not.
    """
    overrides = {
        "trainer.save_dir": save_dir,
        "trainer.epochs": epochs,
        "data_loader.args.data_dir": DATA_DIR,
        "data_loader.args.pin_memory": "false",
    }
    argv = ["-c", str(CONFIG), "-d", "cpu", "--run-id", "ours"]
    for key, value in overrides.items():
        argv += ["-o", f"{key}={value}"]
    trainer, run_dirs = train.build(train.parse_args(argv))
    time_trainer(trainer, run_dirs, clock)


def one_pass(
    model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, float]:
    """Sample-weighted mean loss, accuracy and top-3 accuracy over `loader`, with a training
    step per batch when `optimizer` is given."""
    totals = {"loss": 0.0, "accuracy": 0.0, "top_k_acc": 0.0}
    count = 0
    for data, target in loader:
        output = model(data)
        loss = F.nll_loss(output, target)
        if optimizer is not None:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            totals["loss"] += loss.item() * len(target)
            totals["accuracy"] += accuracy(output, target).item() * len(target)
            totals["top_k_acc"] += top_k_acc(output, target).item() * len(target)
        count += len(target)
    return {name: total / count for name, total in totals.items()}


def hand_written(config: dict, epochs: int, parent_dir: Path, clock: EpochClock) -> None:
    """config.json's run in plain PyTorch, as one writes it without a template; checkpoints
    go to a fresh directory under `parent_dir`."""
    seed_everything(config["seed"])
    loader_args = config["data_loader"]["args"]
    dataset = load_mnist5k(DATA_DIR, training=True)
    train_indices, valid_indices = split_indices(len(dataset), loader_args["validation_split"], 0)
    batch_size, workers = loader_args["batch_size"], loader_args["num_workers"]
    train_loader = DataLoader(
        Subset(dataset, train_indices),
        batch_size=batch_size,
        shuffle=loader_args["shuffle"],
        num_workers=workers,
    )
    valid_loader = DataLoader(Subset(dataset, valid_indices), batch_size, num_workers=workers)
    model = LeNet(**config["arch"]["args"])
    optimizer = torch.optim.Adam(model.parameters(), **config["optimizer"]["args"])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, **config["lr_scheduler"]["args"])
    save_period = config["trainer"]["save_period"]
    save_dir = Path(tempfile.mkdtemp(prefix="hand-", dir=parent_dir))
    best_val_loss = math.inf
    for epoch in range(1, epochs + 1):
        clock.mark()
        model.train()
        log = one_pass(model, train_loader, optimizer)
        model.eval()
        with torch.no_grad():
            valid_log = one_pass(model, valid_loader)
        log.update({f"val_{name}": value for name, value in valid_log.items()})
        scheduler.step()
        print(f"epoch {epoch}/{epochs}  " + "  ".join(f"{k} {v:.6g}" for k, v in log.items()))
        state = {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
        if epoch % save_period == 0 or epoch == epochs:
            torch.save(state, save_dir / f"checkpoint-epoch{epoch}.pth")
        if log["val_loss"] < best_val_loss:
            best_val_loss = log["val_loss"]
            torch.save(state, save_dir / "model_best.pth")
    clock.mark()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    machine = f"{describe_machine()}\n{load_average()}"
    print(machine, flush=True)
    config = resolve_config(load_config_file(CONFIG))
    check_config(config)
    n_samples = len(load_mnist5k(DATA_DIR, training=True))
    n_train = len(split_indices(n_samples, config["data_loader"]["args"]["validation_split"], 0)[0])
    with tempfile.TemporaryDirectory(dir=args.save_dir) as save_dir:
        hand = Contender(
            "hand-written loop", partial(hand_written, config, args.epochs, Path(save_dir))
        )
        ours_ = Contender(
            "ours (train.py, config.json)",
            partial(ours, args.epochs, Path(save_dir)),
            baseline=hand.name,
        )
        outcomes = run_rounds([ours_, hand], args.rounds, torch.device("cpu"))
    print(f"\n## CPU, config/config.json ({n_train:,} training samples per epoch)\n")
    print(machine)
    print(
        f"\n{args.epochs} epochs per run, the first discarded; {args.rounds} rounds, "
        "alternating order; samples/s include the validation pass.\n"
    )
    print(results_table(outcomes, n_train), flush=True)
    return 1 if any(outcome.error for outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
