"""GPU training throughput: our Trainer against hand-written loops and Lightning.

    python benchmarks/gpu.py [--workload lenet|resnet18|all] [--epochs 3] [--rounds 3]
                             [--workers 4] [--save-dir DIR]
    python benchmarks/gpu.py --smoke    # tiny sizes, on the CPU if there is no GPU

`--smoke` only checks that every code path runs (its numbers mean nothing; it compiles
with Dynamo's "eager" backend, skipping Inductor's slow code generation); without it the
script needs CUDA. Not part of the test suite.

Workloads, on random tensors from a fixed seed (they measure speed, not learning):
- lenet: model.model.LeNet on 60,000 samples 1x28x28, 10 classes, batch 128, fp32, Adam
  (lr 1e-3), nll_loss.
- resnet18: benchmarks/resnet.py's ResNet18 on 50,000 samples 3x32x32, batch 512, bf16
  autocast, channels_last, SGD (lr 0.1, momentum 0.9, nesterov, weight decay 5e-4),
  cross_entropy.

Contenders, all with the same model initialisation, optimizer and precision (and
cudnn.benchmark on):
1. ours, DataLoader: our Trainer over a BaseDataLoader, i.e. a torch DataLoader over the
   CPU TensorDataset (per-sample indexing and collate in `--workers` worker processes,
   pinned batches, non-blocking copies): what a config-named loader does.
2. ours, GPU-resident: our Trainer over TensorDataLoader(device_resident=True): the data
   moves to the GPU once and batches are cut from it by index.
3. ours, GPU-resident, compiled: the same with `trainer.compile: true`.
4. hand-written, DataLoader: a plain loop over a DataLoader with 1's settings.
5. hand-written, GPU-resident: a plain loop over the data on the GPU, cut by a fresh
   randperm every epoch.
6. Lightning, DataLoader: `L.Trainer` with its defaults (progress bar, logger,
   checkpointing) over 4's DataLoader; skipped with a note if `import lightning` fails.

The work per epoch is the same for all: one pass over the training data (no validation
pass, no metric but the loss) and one checkpoint of the model and optimizer. On top of it
ours does what the config defaults say: a tqdm bar, TensorBoard (the loss and learning rate
every 10 steps; the epoch's means, an image grid and a histogram of every parameter each
epoch), the epoch log line (console and info.log), and an atomically written checkpoint
every epoch (save_period 1). Lightning does what its defaults say: a progress bar refreshed
every step, its logger every 50 steps (the module logs `train_loss` every step) and a
checkpoint every epoch. The hand-written loops add the loss up on the GPU, print it once
per epoch and `torch.save` the model and optimizer state.

Timing (benchmarks/common.py): an epoch lasts from its start to the next epoch's start
(the last one until training returns), the GPU synchronised at each stamp; the first epoch
of every run is discarded: it holds cuDNN autotuning and, for 3, compilation
(torch._dynamo is reset before each compiled run, so every round compiles afresh).
samples/s = training samples of the other epochs over their wall time; the table gives the
median over rounds, which alternate the contenders' order. Peak GPU memory is
torch.cuda.max_memory_allocated over the whole run; for the GPU-resident contenders it
includes the data set (0.18 GiB for lenet, 0.57 GiB for resnet18). "vs hand-written" is the
median per-round ratio to the hand-written loop on the same data path (1 and 6 against 4;
2 and 3 against 5).
"""

# The imports after the sys.path line need the repository root on the path:
# ruff: noqa: E402
import argparse
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the template's packages, from any directory

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from base import BaseDataLoader, TensorDataLoader
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
from benchmarks.resnet import ResNet18
from builder import build_hooks, trainer_options
from logger.logger import setup_logging
from model import loss as losses
from model.model import LeNet
from trainer import Trainer
from utils.config.check import resolve_config
from utils.distributed.precision import AMP_DTYPES
from utils.run.dirs import create_run_dirs

DATA_SEED, MODEL_SEED = 0, 0
Batches = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]  # one epoch's batches


@dataclass(frozen=True)
class Workload:
    """A model with its data shape, batch size, optimizer, loss and precision."""

    name: str
    samples: int
    shape: tuple[int, ...]  # one sample: (C, H, W)
    batch_size: int
    model: type[nn.Module]
    optimizer: dict  # a config node: {"type": a class in torch.optim, "args": {...}}
    loss: str  # a function in model/loss.py
    amp: str | bool  # as trainer.amp: "bf16", or False for fp32
    channels_last: bool

    @property
    def title(self) -> str:
        """The table's heading, e.g. "LeNet, 60,000 samples 1×28×28, batch 128, fp32, Adam"."""
        shape = "×".join(str(size) for size in self.shape)
        precision = f"{self.amp} autocast" if self.amp else "fp32"
        layout = ", channels_last" if self.channels_last else ""
        optimizer = self.optimizer["type"]
        return (
            f"{self.model.__name__}, {self.samples:,} samples {shape}, batch {self.batch_size}, "
            f"{precision}{layout}, {optimizer}"
        )

    @property
    def criterion(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return getattr(losses, self.loss)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return AMP_DTYPES[self.amp] if self.amp else None

    @property
    def layout(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.preserve_format


WORKLOADS = {
    "lenet": Workload(
        "lenet", 60_000, (1, 28, 28), 128, LeNet, {"type": "Adam", "args": {"lr": 1e-3}},
        "nll_loss", amp=False, channels_last=False,
    ),
    "resnet18": Workload(
        "resnet18", 50_000, (3, 32, 32), 512, ResNet18,
        {"type": "SGD", "args": {"lr": 0.1, "momentum": 0.9, "nesterov": True,
                                 "weight_decay": 5e-4}},
        "cross_entropy", amp="bf16", channels_last=True,
    ),
}  # fmt: skip
SMOKE_SIZES = {"lenet": (256, 64), "resnet18": (32, 16)}  # (samples, batch size) for --smoke


@dataclass
class Bench:
    """What every contender of one workload shares: the data, the device, the options."""

    workload: Workload
    data: TensorDataset  # on the CPU
    device: torch.device
    epochs: int
    workers: int
    save_dir: Path
    compile_option: bool | dict  # trainer.compile for contender 3

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"

    def new_model(self) -> nn.Module:
        """The workload's model on the device, initialised alike for every contender."""
        torch.manual_seed(MODEL_SEED)
        return self.workload.model().to(self.device)

    def new_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        node = self.workload.optimizer
        return getattr(torch.optim, node["type"])(model.parameters(), **node["args"])

    def data_loader(self) -> DataLoader:
        """The hand-written and Lightning contenders' loader: BaseDataLoader's settings."""
        return DataLoader(
            self.data,
            batch_size=self.workload.batch_size,
            shuffle=True,
            num_workers=self.workers,
            pin_memory=self.pin_memory,
        )

    def run_dir(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.save_dir))


def synthetic_data(workload: Workload) -> TensorDataset:
    """Normal images and uniform labels from a fixed seed, as one CPU TensorDataset."""
    generator = torch.Generator().manual_seed(DATA_SEED)
    images = torch.randn((workload.samples, *workload.shape), generator=generator)
    labels = torch.randint(0, 10, (workload.samples,), generator=generator)
    return TensorDataset(images, labels)


def ours(bench: Bench, clock: EpochClock, resident: bool, compiled: bool = False) -> None:
    """Our Trainer, configured by a config dict as train.py's would be by a file. The data
    and ResNet18 are not parts a config can name, so the Trainer is constructed directly,
    with the hooks and options `builder.build_trainer` would give it."""
    workload = bench.workload
    if resident:
        loader = TensorDataLoader(
            bench.data.tensors, workload.batch_size, device_resident=True, device=bench.device
        )
        loader_args = {"device_resident": True}
    else:
        loader = BaseDataLoader(
            bench.data, workload.batch_size, num_workers=bench.workers, pin_memory=bench.pin_memory
        )
        loader_args = {"num_workers": bench.workers, "pin_memory": bench.pin_memory}
    config = resolve_config(
        {
            "name": f"bench_{workload.name}",
            "seed": MODEL_SEED,
            # Only a record (in checkpoints) of what ran: the parts are built below.
            "arch": {"type": workload.model.__name__, "args": {}},
            "data_loader": {
                "type": type(loader).__name__,
                "args": {"batch_size": workload.batch_size, "shuffle": True, **loader_args},
            },
            "optimizer": workload.optimizer,
            "loss": workload.loss,
            "metrics": [],
            "trainer": {
                "epochs": bench.epochs,
                "save_dir": str(bench.save_dir),
                "amp": workload.amp,
                "channels_last": workload.channels_last,
                "compile": bench.compile_option if compiled else False,
                "cudnn_benchmark": True,
            },
        }
    )
    if compiled:
        torch._dynamo.reset()  # compile afresh, in this run's first (discarded) epoch
    model = bench.new_model()
    # What builder.build_trainer does after building the parts: the hooks the trainer keys
    # ask for (no LR scheduler here), the other trainer keys as the Trainer's options.
    options = trainer_options(config)
    trainer = Trainer(
        {"model": model},
        {"model": bench.new_optimizer(model)},
        loader,
        criterion=workload.criterion,
        metric_fns={},
        device=bench.device,
        config=config,
        hooks=build_hooks(config, {}),
        **options,
    )
    run_dirs = create_run_dirs(bench.run_dir("ours-"), config["name"], "ours")  # one per round
    setup_logging(run_dirs.log, config["trainer"]["verbosity"])  # as train.py does
    try:
        time_trainer(trainer, run_dirs, clock)
    finally:
        setup_logging(None, 1)  # closes this run's info.log
        if compiled:
            torch._dynamo.reset()  # no compiled graph keeps this run's tensors alive


def loader_batches(bench: Bench) -> Batches:
    """Batches from a DataLoader over the CPU data, copied to the GPU without waiting."""
    loader, layout = bench.data_loader(), bench.workload.layout

    def epoch() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for data, target in loader:
            yield (
                data.to(bench.device, non_blocking=True, memory_format=layout),
                target.to(bench.device, non_blocking=True),
            )

    return epoch


def resident_batches(bench: Bench) -> Batches:
    """Batches cut by index from the data on the GPU, in a fresh random order each epoch."""
    images, labels = (tensor.to(bench.device) for tensor in bench.data.tensors)
    batch_size, layout = bench.workload.batch_size, bench.workload.layout

    def epoch() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(labels), device=bench.device)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            yield images[index].to(memory_format=layout), labels[index]

    return epoch


def hand_written(bench: Bench, clock: EpochClock, resident: bool) -> None:
    """The training loop as one writes it without a framework: autocast and channels_last
    where the workload uses them, the loss added up on the device."""
    workload, device = bench.workload, bench.device
    batches = resident_batches(bench) if resident else loader_batches(bench)
    model = bench.new_model().to(memory_format=workload.layout)
    optimizer = bench.new_optimizer(model)
    dtype = workload.autocast_dtype
    checkpoint = bench.run_dir("hand-") / "checkpoint.pth"
    for epoch in range(1, bench.epochs + 1):
        clock.mark()
        model.train()
        loss_sum, n_batches = torch.zeros((), device=device), 0
        for data, target in batches():
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = workload.criterion(model(data), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            n_batches += 1
        print(f"epoch {epoch}/{bench.epochs}  loss {loss_sum.item() / n_batches:.4f}", flush=True)
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, checkpoint)
    clock.mark()


def lightning(bench: Bench, clock: EpochClock) -> None:
    """Lightning's Trainer with its defaults, over the hand-written loop's DataLoader."""
    import lightning as L

    workload = bench.workload

    class Classifier(L.LightningModule):
        """The same model, loss and optimizer, written as Lightning's docs write a module."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def training_step(
            self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
        ) -> torch.Tensor:
            data, target = batch
            loss = workload.criterion(self.model(data.to(memory_format=workload.layout)), target)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return bench.new_optimizer(self.model)

    class EpochStarts(L.Callback):
        def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            clock.mark()

    model = bench.new_model().to(memory_format=workload.layout)
    trainer = L.Trainer(
        max_epochs=bench.epochs,
        accelerator="gpu" if bench.device.type == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed" if workload.amp == "bf16" else "32-true",
        default_root_dir=bench.run_dir("lightning-"),
        callbacks=[EpochStarts()],
    )
    trainer.fit(Classifier(model), bench.data_loader())
    clock.mark()


def lightning_status() -> tuple[bool, str]:
    """Whether Lightning can run here, and the line the report gives about it."""
    try:
        import lightning
    except Exception as error:  # not installed, or a build that does not fit this torch
        return False, f"Lightning skipped: `import lightning` failed ({error})"
    return True, f"Lightning {lightning.__version__}"


def contenders(bench: Bench, with_lightning: bool) -> list[Contender]:
    hand_loader, hand_resident = "hand-written, DataLoader", "hand-written, GPU-resident"
    listed = [
        Contender("ours, DataLoader", partial(ours, bench, resident=False), hand_loader),
        Contender("ours, GPU-resident", partial(ours, bench, resident=True), hand_resident),
        Contender(
            "ours, GPU-resident, compiled",
            partial(ours, bench, resident=True, compiled=True),
            hand_resident,
        ),
        Contender(hand_loader, partial(hand_written, bench, resident=False)),
        Contender(hand_resident, partial(hand_written, bench, resident=True)),
    ]
    if with_lightning:
        listed.append(Contender("Lightning, DataLoader", partial(lightning, bench), hand_loader))
    return listed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    parser.add_argument("--epochs", type=int, help="per run, the first discarded (default 3)")
    parser.add_argument("--rounds", type=int, help="rounds of all contenders (default 3)")
    parser.add_argument("--workers", type=int, help="DataLoader workers (default 4)")
    parser.add_argument("--save-dir", type=directory,
                        help="where runs write (default: a temporary directory)")  # fmt: skip
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, 2 epochs, 2 rounds: checks the code paths, on the "
        "CPU when there is no GPU",
    )
    args = parser.parse_args(argv)
    defaults = (
        {"epochs": 2, "rounds": 2, "workers": 2}
        if args.smoke
        else {"epochs": 3, "rounds": 3, "workers": 4}
    )
    for name, default in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.epochs < 2 or args.rounds < 1 or args.workers < 0:
        parser.error("need --epochs >= 2 (the first is discarded), --rounds >= 1, --workers >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available() and not args.smoke:
        print(
            "benchmarks/gpu.py: no CUDA device here, and it measures GPU training. "
            "`--smoke` runs tiny sizes on the CPU to check the code paths.",
            file=sys.stderr,
        )
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with_lightning, lightning_line = lightning_status()  # imported before any logging setup
    machine = f"{describe_machine()}\n{load_average()}\n{lightning_line}"
    print(machine, flush=True)
    torch.backends.cudnn.benchmark = True  # for every contender alike
    names = list(WORKLOADS) if args.workload == "all" else [args.workload]
    sections = []
    with tempfile.TemporaryDirectory(dir=args.save_dir) as save_dir:
        for name in names:
            workload = WORKLOADS[name]
            if args.smoke:
                samples, batch_size = SMOKE_SIZES[name]
                workload = replace(workload, samples=samples, batch_size=batch_size)
            bench = Bench(
                workload,
                synthetic_data(workload),
                device,
                args.epochs,
                args.workers,
                Path(save_dir),
                # --smoke: Dynamo without Inductor's code generation, which is slow
                {"backend": "eager"} if args.smoke else True,
            )
            outcomes = run_rounds(contenders(bench, with_lightning), args.rounds, device)
            table = results_table(
                outcomes, workload.samples, ratio_header="vs hand-written, same data path"
            )
            sections.append((workload.title, table, any(o.error for o in outcomes)))
            print(f"\n### {workload.title}\n\n{table}\n", flush=True)
    smoke_note = " (SMOKE RUN: tiny sizes, the numbers mean nothing)" if args.smoke else ""
    print(f"\n## GPU throughput{smoke_note}")
    print(f"\n{machine}")
    print(
        f"{args.epochs} epochs per run, the first discarded; {args.rounds} rounds, alternating "
        f"order; DataLoader contenders: {args.workers} workers"
        f"{', pinned memory' if device.type == 'cuda' else ''}; no validation pass; "
        "one checkpoint per epoch for every contender."
    )
    for title, table, _ in sections:
        print(f"\n### {title}\n\n{table}")
    return 1 if any(failed for *_, failed in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
