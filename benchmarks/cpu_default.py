"""The default config on a CPU: our Trainer, built exactly as train.py builds it, against the
same run written by hand in plain PyTorch, twice: over a DataLoader, and over in-memory tensors.

    python benchmarks/cpu_default.py [--epochs 8] [--rounds 5] [--workers N] [--save-dir DIR]

Every contender trains config/config.json's run: LeNet on the bundled MNIST subset (3,600
training and 400 validation images: `split_indices`' held-out split with split_seed 0),
batches of 128 in a fresh order every epoch, Adam (amsgrad), nll_loss, StepLR, the same
seed. Per epoch each computes loss, accuracy and top-3 accuracy on every training batch,
runs a validation pass, prints an epoch line, and saves checkpoints at the config's cadence:
model_best.pth whenever val_loss improves, checkpoint-epochN.pth every `save_period` epochs
and at the last. The contenders:

- ours (train.py, config.json): `train.py -c config/config.json -d cpu`, with only the
  epochs and the save directory overridden; its batches come from whichever loader the
  config names (Mnist5kTensorDataLoader: cut by index from in-memory tensors;
  Mnist5kDataLoader: a DataLoader with the config's workers).
- hand-written, DataLoader: a torch DataLoader over the training `Subset` (per-sample
  `__getitem__` and collate) in `--workers` worker processes (default: the config's
  `num_workers`, else 2), the validation pass over a second one.
- hand-written, tensors: the images and labels as tensors in memory; each training batch
  is cut from them by index (one gather per tensor), each validation batch by slicing. No
  DataLoader, no workers.

What only ours does on top (so the ratios are the price of it): tqdm progress bars, the log
line also written to info.log, TensorBoard (scalars every 10 steps, the epoch's means, an
image grid and a histogram of every parameter each epoch), a stop-signal check, and
checkpoints that also hold the scheduler, RNG, monitor and data position and are written
atomically (temporary file, fsync, rename). The hand-written loops save
`torch.save({epoch, model, optimizer})` and print their epoch line.

Each epoch's order is a `torch.randperm` from a `torch.Generator` seeded with (a seed drawn
once from the run's seeded generator) + epoch, as the template's loaders do, and neither
hand-written loader draws from the global generator while it runs, so dropout gets the same
random numbers in all contenders. With the same initial weights the epoch lines agree digit
for digit: a check that they compute the same thing. (The template's Mnist5kTensorDataLoader
draws one more number than Mnist5kDataLoader before the model is built, so with it the
weights, and the numbers, differ from the hand-written loops'; the work does not.)

Timing: an epoch lasts from its start to the next epoch's start (the last one until
training returns), so validation, logging and checkpoints are in it for all. Ours is timed
by wrapping the trainer's `_train_epoch` (its code runs unchanged) inside one
`trainer.train(run_dirs)` call, as train.py makes it. Building the run (config, data,
model, run directory, TensorBoard writer) is outside the epochs for all; the first epoch
of every run is discarded. samples/s = training samples of the remaining epochs divided by
their wall time (validation included). The contenders alternate in rounds (the order
reversed every other round); the table gives the median over rounds, and for each pair the
median of the per-round ratios.

Not part of the test suite. The default (8 epochs, 5 rounds: 120 epochs in all) takes about
5 minutes on 2 idle CPU cores, much longer on a busy machine; `--epochs 2 --rounds 1`
checks that everything runs.
"""

# The imports after the sys.path line need the repository root on the path:
# ruff: noqa: E402
import argparse
import math
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
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
    directory,
    first_paragraph,
    load_average,
    results_table,
    run_rounds,
    time_trainer,
)
from data_loader.mnist5k import load_mnist5k
from model.metric import accuracy, top_k_acc
from model.model import LeNet
from utils.config.check import load_config_file, resolve_config
from utils.seed import seed_everything

CONFIG = ROOT / "config" / "config.json"
DATA_DIR = ROOT / "data"
# What the hand-written loops implement; if config.json changes, they must change too.
EXPECTED = {
    "arch": "LeNet",
    "optimizer": "Adam",
    "loss": "nll_loss",
    "lr_scheduler": "StepLR",
    "metrics": ["accuracy", "top_k_acc"],
    "monitor": "min val_loss",
    # The trainer keys that change the work done, at what the hand-written loops do.
    "trainer": {"accumulate_steps": 1, "clip_grad_norm": None, "compile": False, "amp": False,
                "len_epoch": None, "channels_last": False, "on_nonfinite": None, "hooks": [],
                "early_stop": 10, "save_every_steps": None},
}  # fmt: skip
# The config's loaders that read the same images and split them the same way, and the
# arguments of theirs that the hand-written loops follow (or that change nothing on a CPU).
LOADERS = {"Mnist5kDataLoader", "Mnist5kTensorDataLoader"}
LOADER_ARGS = {"data_dir", "batch_size", "shuffle", "validation_split", "num_workers",
               "pin_memory", "drop_last", "device_resident"}  # fmt: skip
DEFAULT_WORKERS = 2  # the DataLoader loop's, when the config names none

Batch = tuple[torch.Tensor, torch.Tensor]
# One epoch's (training batches, validation batches), given the epoch's training order.
EpochData = Callable[[torch.Tensor], tuple[Iterable[Batch], Iterable[Batch]]]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument(
        "--epochs", type=int, default=8, help="epochs per run (the first is discarded)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of all contenders")
    parser.add_argument(
        "--workers",
        type=int,
        help="worker processes of the hand-written DataLoader loop (default: the config's "
        f"data_loader.args.num_workers, else {DEFAULT_WORKERS})",
    )
    parser.add_argument("--save-dir", type=directory,
                        help="where runs write (default: a temporary directory)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.epochs < 2 or args.rounds < 1 or (args.workers is not None and args.workers < 0):
        parser.error("need --epochs >= 2 (the first is discarded), --rounds >= 1, --workers >= 0")
    return args


def check_config(config: dict) -> None:
    """Stop if config.json no longer names what the hand-written loops implement."""
    found = {
        "arch": config["arch"]["type"],
        "optimizer": config["optimizer"]["type"],
        "loss": config["loss"]["type"],
        "lr_scheduler": (config["lr_scheduler"] or {}).get("type"),
        "metrics": [node["type"] for node in config["metrics"]],
        "monitor": config["trainer"]["monitor"],
        "trainer": {key: config["trainer"][key] for key in EXPECTED["trainer"]},
    }
    loader = config["data_loader"]
    unknown = set(loader["args"]) - LOADER_ARGS
    if (
        found != EXPECTED
        or any(node["args"] for node in config["metrics"])
        or loader["type"] not in LOADERS
        or unknown
        or loader["args"].get("drop_last", False)
    ):
        sys.exit(
            f"{CONFIG} changed ({found}, data_loader {loader}); update the hand-written loops "
            f"in {__file__}"
        )


def ours(config: dict, epochs: int, save_dir: Path, clock: EpochClock) -> None:
    """train.py's path: `build(parse_args(...))`, then one `trainer.train(run_dirs)`.

    Only where the config's loader is a DataLoader is `pin_memory=false` added: it is what
    the loader's `null` means on a machine without CUDA; on a GPU machine `null` would pin
    batches even for `-d cpu`, which the hand-written loops do not.
    """
    overrides = {
        "trainer.save_dir": tempfile.mkdtemp(prefix="ours-", dir=save_dir),  # one per round
        "trainer.epochs": epochs,
        "data_loader.args.data_dir": DATA_DIR,
    }
    if config["data_loader"]["type"] == "Mnist5kDataLoader":
        overrides["data_loader.args.pin_memory"] = "false"
    argv = ["-c", str(CONFIG), "-d", "cpu", "--run-id", "ours"]
    for key, value in overrides.items():
        argv += ["-o", f"{key}={value}"]
    trainer, run_dirs = train.build(train.parse_args(argv))
    time_trainer(trainer, run_dirs, clock)


def one_pass(
    model: nn.Module, batches: Iterable[Batch], optimizer: torch.optim.Optimizer | None = None
) -> dict[str, float]:
    """Sample-weighted mean loss, accuracy and top-3 accuracy over `batches`, with a training
    step per batch when `optimizer` is given."""
    totals = {"loss": 0.0, "accuracy": 0.0, "top_k_acc": 0.0}
    count = 0
    for data, target in batches:
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


def dataloader_data(config: dict, workers: int) -> tuple[int, EpochData]:
    """The training split's size, and each epoch's batches from two torch DataLoaders.

    The training loader's sampler is a list that every epoch refills with its order. Each
    loader has a generator of its own (for its worker seeds), so that it draws nothing from
    the global one (dropout's).
    """
    args = config["data_loader"]["args"]
    dataset = load_mnist5k(DATA_DIR, training=True)
    train_indices, valid_indices = split_indices(len(dataset), args["validation_split"], 0)
    order: list[int] = []
    train_loader = DataLoader(
        Subset(dataset, train_indices),
        args["batch_size"],
        sampler=order,
        num_workers=workers,
        generator=torch.Generator(),
    )
    valid_loader = DataLoader(
        Subset(dataset, valid_indices),
        args["batch_size"],
        num_workers=workers,
        generator=torch.Generator(),
    )

    def epoch(epoch_order: torch.Tensor) -> tuple[DataLoader, DataLoader]:
        order[:] = epoch_order.tolist()
        return train_loader, valid_loader

    return len(train_indices), epoch


def tensor_data(config: dict) -> tuple[int, EpochData]:
    """The training split's size, and each epoch's batches cut from tensors in memory:
    training batches by index in the epoch's order, validation batches by slicing."""
    batch_size = config["data_loader"]["args"]["batch_size"]
    images, labels = load_mnist5k(DATA_DIR, training=True).tensors
    split = config["data_loader"]["args"]["validation_split"]
    train_indices, valid_indices = (
        torch.tensor(indices) for indices in split_indices(len(labels), split, 0)
    )
    train_images, train_labels = images[train_indices], labels[train_indices]
    valid_images, valid_labels = images[valid_indices], labels[valid_indices]

    def train_batches(epoch_order: torch.Tensor) -> Iterable[Batch]:
        for index in epoch_order.split(batch_size):
            yield train_images[index], train_labels[index]

    def valid_batches() -> Iterable[Batch]:
        for start in range(0, len(valid_labels), batch_size):
            stop = start + batch_size
            yield valid_images[start:stop], valid_labels[start:stop]

    return len(train_labels), lambda epoch_order: (train_batches(epoch_order), valid_batches())


def hand_written(
    config: dict,
    epochs: int,
    parent_dir: Path,
    clock: EpochClock,
    data: Callable[[], tuple[int, EpochData]],
) -> None:
    """config.json's run in plain PyTorch, as one writes it without a template, over the
    batches `data()` makes; checkpoints go to a fresh directory under `parent_dir`."""
    seed_everything(config["seed"])
    n_train, epoch_data = data()
    # Each epoch's order comes from its own generator: seeded with order_seed + epoch.
    order_seed, order_generator = int(torch.randint(2**62, ())), torch.Generator()
    shuffle = config["data_loader"]["args"].get("shuffle", True)
    model = LeNet(**config["arch"]["args"])
    optimizer = torch.optim.Adam(model.parameters(), **config["optimizer"]["args"])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, **config["lr_scheduler"]["args"])
    save_period = config["trainer"]["save_period"]
    save_dir = Path(tempfile.mkdtemp(prefix="hand-", dir=parent_dir))
    best_val_loss = math.inf
    for epoch in range(1, epochs + 1):
        clock.mark()
        if shuffle:
            order_generator.manual_seed(order_seed + epoch)
            order = torch.randperm(n_train, generator=order_generator)
        else:
            order = torch.arange(n_train)
        train_batches, valid_batches = epoch_data(order)
        model.train()
        log = one_pass(model, train_batches, optimizer)
        model.eval()
        with torch.no_grad():
            valid_log = one_pass(model, valid_batches)
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
    loader = config["data_loader"]
    workers = args.workers
    if workers is None:
        workers = loader["args"].get("num_workers", DEFAULT_WORKERS)
    n_samples = len(load_mnist5k(DATA_DIR, training=True))
    n_train = len(split_indices(n_samples, loader["args"]["validation_split"], 0)[0])
    with tempfile.TemporaryDirectory(dir=args.save_dir) as save_dir:
        hand = partial(hand_written, config, args.epochs, Path(save_dir))
        by_loader = Contender(
            f"hand-written, DataLoader ({workers} workers)",
            partial(hand, data=partial(dataloader_data, config, workers)),
        )
        by_tensors = Contender(
            "hand-written, tensors", partial(hand, data=partial(tensor_data, config))
        )
        ours_ = Contender(
            f"ours (train.py, config.json: {loader['type']})",
            partial(ours, config, args.epochs, Path(save_dir)),
        )
        outcomes = run_rounds([ours_, by_loader, by_tensors], args.rounds, torch.device("cpu"))
    print(f"\n## CPU, config/config.json ({n_train:,} training samples per epoch)\n")
    print(machine)
    print(
        f"\n{args.epochs} epochs per run, the first discarded; {args.rounds} "
        f"round{'s' if args.rounds > 1 else ''}, alternating order; samples/s include the "
        "validation pass; a ratio is the median "
        "of the per-round ratios row / column.\n"
    )
    references = [by_loader.name, by_tensors.name]
    print(results_table(outcomes, n_train, references=references), flush=True)
    return 1 if any(outcome.error for outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
