"""A TensorBoard writer that can be switched off without `if` statements at every call site."""

import json
import time
from pathlib import Path
from typing import Any

import torch

# Config keys that say where or how loudly a run ran, not what it trained: no hyperparameters.
NOT_HYPERPARAMETERS = ("code_version", "data_loader.args.data_dir", "trainer.save_dir",
                       "trainer.verbosity", "trainer.progress_bar", "trainer.tensorboard",
                       "trainer.log_images", "trainer.metrics_csv")  # fmt: skip


def hyperparameters(config: dict, prefix: str = "") -> dict[str, float | int | str]:
    """The config's values by dotted key (`optimizer.args.lr`), as TensorBoard's hparams take
    them: numbers and strings; true/false as strings (torch would make them 1.0/0.0, and
    `amp` is "bf16" or false), lists as JSON text. Nulls and `NOT_HYPERPARAMETERS` are left
    out."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if path in NOT_HYPERPARAMETERS or value is None:
            continue
        if isinstance(value, dict):
            flat.update(hyperparameters(value, f"{path}."))
        elif isinstance(value, bool):
            flat[path] = "true" if value else "false"
        elif isinstance(value, list):
            flat[path] = json.dumps(value)
        else:
            flat[path] = value
    return flat


def wait_past_newest_event_file(log_dir: Path) -> None:
    """TensorBoard reads a directory's event files in name order, and a name is the second it
    was made in, then the process id and a counter as unpadded numbers: a resumed run's file
    made in the same second as an earlier one can sort before it, and its purge would then
    hide the wrong events. Wait (under a second) until the clock is past that second."""
    seconds = [int(p.name.split(".")[3]) for p in log_dir.glob("events.out.tfevents.*")]
    while seconds and time.time() < max(seconds) + 1:
        time.sleep(0.01)


class TensorboardWriter:
    """Thin wrapper over `SummaryWriter`; when disabled every method does nothing.

    `purge_step` is the step a resumed run starts from: TensorBoard then hides events at
    or after it that an interrupted earlier attempt wrote, so the curves continue cleanly.
    """

    def __init__(self, log_dir: Path, enabled: bool, purge_step: int | None = None) -> None:
        self._writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter  # slow import, only when used

            wait_past_newest_event_file(Path(log_dir))
            self._writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(prefix + name, value, step)

    def text(self, tag: str, markdown: str, step: int) -> None:
        """Log `markdown`, shown rendered in TensorBoard's Text tab."""
        if self._writer is not None:
            self._writer.add_text(tag, markdown, step)

    def images(self, tag: str, batch: torch.Tensor, step: int) -> None:
        """Log a grid of a batch of images, shape (N, C, H, W), scaled to [0, 1] as a whole."""
        if self._writer is not None:
            batch = batch.detach().float().cpu()
            low, high = batch.min(), batch.max()
            self._writer.add_images(tag, (batch - low) / (high - low).clamp_min(1e-12), step)

    def histograms(
        self, model: torch.nn.Module, step: int, bins: int = 64, prefix: str = "parameters/"
    ) -> None:
        """A histogram of every parameter, binned on its own device: one copy to the host for
        all of them (not one per parameter, which costs a large model most of a GPU epoch)."""
        if self._writer is None:
            return
        names, parameters = zip(*model.named_parameters(), strict=True)
        flat = [parameter.detach().float().flatten() for parameter in parameters]
        stats = torch.stack([torch.stack([v.min(), v.max(), v.sum(), (v * v).sum()]) for v in flat])
        width = (stats[:, 1] - stats[:, 0]).clamp_min(1e-12)  # (P,); stats: (P, 4)
        # histc takes its bounds as numbers (a wait for each): bin the values rescaled to [0, 1]
        scaled = [(v - s[0]) / w for v, s, w in zip(flat, stats, width, strict=True)]
        counts = torch.stack([torch.histc(values, bins, 0, 1) for values in scaled])  # (P, bins)
        edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)[1:]
        rows = zip(names, flat, stats.double().tolist(), counts.tolist(), strict=True)
        for name, values, (low, high, total, squares), bucket_counts in rows:
            self._writer.add_histogram_raw(
                f"{prefix}{name}",
                min=low,
                max=high,
                num=values.numel(),
                sum=total,
                sum_squares=squares,
                bucket_limits=(low + edges * (high - low)).tolist(),
                bucket_counts=bucket_counts,
                global_step=step,
            )

    def hparams(self, values: dict[str, Any], metric_tags: list[str], step: int) -> None:
        """This run's row in TensorBoard's HParams tab: `values` (numbers and strings), with the
        last value of each scalar in `metric_tags` as its metrics. Written into this run's own
        event files: `SummaryWriter.add_hparams` would make a new sub-run for each call."""
        if self._writer is not None:
            from torch.utils.tensorboard.summary import hparams

            experiment, start, end = hparams(values, dict.fromkeys(metric_tags, 0.0))
            for summary in (experiment, start, end):
                self._writer.file_writer.add_summary(summary, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
