"""What the benchmarks share: the machine's description, epoch timing, alternating rounds and
the results table.

Every benchmark follows the same rules, so that its numbers can be compared and trusted:
the contenders run in one process, back to back, on the same model, data, batch size,
optimizer and precision; each run's first epoch is discarded (start-up, autotuning,
compilation); the contenders run in several rounds, in alternating order, and the table
gives medians, so that machine noise and drift hit all of them alike.
"""

import argparse
import gc
import os
import platform
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from base import BaseTrainer
from utils.run.dirs import RunDirs


def first_paragraph(doc: str) -> str:
    """A script's docstring's first paragraph on one line: its `--help` description."""
    return " ".join(doc.split("\n\n")[0].split())


def directory(text: str) -> str:
    """`--save-dir`, for argparse: a directory that exists (runs make theirs inside it)."""
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    return text


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (Linux), else whatever `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine() -> str:
    """CPU, GPU and software versions: the first lines of every benchmark's output."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [f"CPU: {cpu_model()}, {cores} cores usable, torch threads {torch.get_num_threads()}"]
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_properties(0)
        lines.append(
            f"GPU: {gpu.name}, {gpu.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()}"
        )
    else:
        lines.append("GPU: none")
    lines.append(
        f"torch {torch.__version__}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
    return "\n".join(lines)


def load_average() -> str:
    """The system load before a benchmark starts: other work on the machine skews every
    number (read it before starting: during the run it counts the benchmark itself)."""
    if not hasattr(os, "getloadavg"):
        return "load average: unknown"
    return "load average before the start (1, 5, 15 min): " + ", ".join(
        f"{load:.2f}" for load in os.getloadavg()
    )


class EpochClock:
    """Time stamps taken as each epoch starts, and once more when training has ended.

    An epoch lasts from its start to the next epoch's start (the last one: to the end of
    training), so it includes whatever a contender does between epochs: validation, log
    lines, TensorBoard, checkpoints. On a GPU each stamp waits for the queued work first.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stamps: list[float] = []

    def mark(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stamps.append(time.perf_counter())

    def epoch_seconds(self) -> list[float]:
        return [end - start for start, end in zip(self.stamps, self.stamps[1:], strict=False)]


def time_trainer(trainer: BaseTrainer, run_dirs: RunDirs | None, clock: EpochClock) -> None:
    """`trainer.train(run_dirs)`, marking `clock` as each epoch starts and when it returns.

    The clock is read by wrapping the trainer's `_train_epoch` on this instance (not a hook:
    it would run after the hooks listed before it), so the epoch loop runs unchanged.
    """
    train_epoch = trainer._train_epoch

    def timed_epoch(epoch: int) -> None:
        clock.mark()
        train_epoch(epoch)

    trainer._train_epoch = timed_epoch
    trainer.train(run_dirs)
    clock.mark()


@dataclass
class Contender:
    """One way to train the workload.

    `run` trains every epoch from scratch (building what it needs first, untimed), calling
    `clock.mark()` as each epoch starts and once when training has ended. `baseline` names
    the hand-written contender this one is compared with (where the table has one ratio
    column; see `results_table`'s `references` for several).
    """

    name: str
    run: Callable[[EpochClock], None]
    baseline: str | None = None


@dataclass
class Measurement:
    """One run of one contender."""

    epoch_seconds: list[float]
    peak_memory: int | None  # bytes of GPU memory; None on the CPU

    def samples_per_second(self, samples_per_epoch: int, warmup: int = 1) -> float:
        """Training samples per second of wall time over the epochs after `warmup`."""
        steady = self.epoch_seconds[warmup:]
        return samples_per_epoch * len(steady) / sum(steady)


@dataclass
class Outcome:
    """Every round's measurement of one contender, or why it failed."""

    contender: Contender
    measurements: list[Measurement] = field(default_factory=list)
    error: str | None = None


def measure(contender: Contender, device: torch.device, warmup: int = 1) -> Measurement:
    """Run `contender` once; its peak GPU memory is counted from a clean slate."""
    gc.collect()  # what earlier contenders left must not count against this one
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    clock = EpochClock(device)
    contender.run(clock)
    seconds = clock.epoch_seconds()
    if len(seconds) <= warmup:
        raise RuntimeError(
            f"{contender.name}: timed {len(seconds)} epochs, need more than {warmup}"
        )
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return Measurement(seconds, peak)


def run_rounds(
    contenders: Sequence[Contender], rounds: int, device: torch.device, warmup: int = 1
) -> list[Outcome]:
    """Run every contender once per round, the order reversed every other round.

    A contender that fails is reported (traceback on stderr) and left out of later rounds;
    the others carry on.
    """
    outcomes = {contender.name: Outcome(contender) for contender in contenders}
    for round_index in range(rounds):
        order = contenders if round_index % 2 == 0 else list(reversed(contenders))
        for contender in order:
            outcome = outcomes[contender.name]
            if outcome.error is not None:
                continue
            print(f"\n=== round {round_index + 1}/{rounds}: {contender.name} ===", flush=True)
            try:
                outcome.measurements.append(measure(contender, device, warmup))
            except Exception as error:  # one broken contender should not sink the others
                traceback.print_exc()
                outcome.error = f"{type(error).__name__}: {error}".splitlines()[0]
    return list(outcomes.values())


def _format_memory(size: int | None) -> str:
    if size is None:
        return "–"
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def _ratio(own: list[float], theirs: list[float], baseline: str) -> str:
    """The median of the per-round ratios own / theirs (each round's runs ran side by side)."""
    paired = list(zip(own, theirs, strict=False))
    if not paired:
        return f"– ({baseline} did not run)"
    return f"{statistics.median(mine / other for mine, other in paired):.2f}×"


def results_table(
    outcomes: Sequence[Outcome],
    samples_per_epoch: int,
    warmup: int = 1,
    ratio_header: str = "vs hand-written",
    references: Sequence[str] = (),
) -> str:
    """A Markdown table: median samples/s, speed relative to the baseline, peak GPU memory
    (on a GPU), and every round's samples/s so that the spread is visible.

    A ratio is the median of the per-round ratios: a contender is compared with its
    baseline's run of the same round, which ran next to it. By default there is one ratio
    column (`ratio_header`), against each contender's own `baseline`; with `references`
    (contender names) there is one column per reference instead, "vs <name>", filled in for
    every contender (a reference's own cell says "reference").
    """
    rates = {
        outcome.contender.name: [
            m.samples_per_second(samples_per_epoch, warmup) for m in outcome.measurements
        ]
        for outcome in outcomes
    }
    on_gpu = any(m.peak_memory is not None for outcome in outcomes for m in outcome.measurements)
    if references:
        columns = [(f"vs {name}", lambda contender, name=name: name) for name in references]
    else:
        columns = [(ratio_header, lambda contender: contender.baseline)]
    header = ["contender", "samples/s (median)", *(title for title, _ in columns)]
    header += ["peak GPU memory"] if on_gpu else []
    header += ["each round (samples/s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for outcome in outcomes:
        name, own = outcome.contender.name, rates[outcome.contender.name]
        if not own:
            row = [name, f"failed: {outcome.error}", *("–" for _ in columns)]
        else:
            row = [name, f"{statistics.median(own):,.0f}"]
            for _, baseline_of in columns:
                baseline = baseline_of(outcome.contender)
                if baseline is None or baseline == name:
                    row.append("reference")
                else:
                    row.append(_ratio(own, rates.get(baseline, []), baseline))
        if on_gpu:
            peaks = [m.peak_memory for m in outcome.measurements if m.peak_memory is not None]
            row.append(_format_memory(max(peaks)) if peaks else "–")
        row.append(" / ".join(f"{rate:,.0f}" for rate in own) or "–")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
