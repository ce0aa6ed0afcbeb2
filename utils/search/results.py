"""What a finished search leaves: the table of its trials (printed and `trials.csv`) and the
best trial's config as a file that `train.py -c` trains."""

import csv
import io
import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

from utils.checkpoint.files import atomic_write
from utils.config.file import load_config_file
from utils.config.overrides import apply_overrides
from utils.errors import TrainingFailed, cut
from utils.run.dirs import readable_path
from utils.search.space import override


@dataclass(frozen=True)
class TrialRow:
    trial_id: str
    values: dict[str, Any]  # each searched key's value, by dotted key
    best: float | None  # the best monitored value it reached (None: it reported nothing)
    epochs: int  # epochs completed
    status: str  # finished, stopped (by the scheduler or early stopping), error
    run_dir: str  # its run directory, for test.py -r


def trial_rows(
    results: Iterable[Any], keys: list[str], best_key: str, models: Path
) -> list[TrialRow]:
    """A row per trial of Ray's results (each with `metrics`, its last report; `config`, its
    sampled values; `error`; `path`), for the searched `keys`; `models` holds the trials'
    run directories. Its status: "finished" when it ran all its epochs, "stopped" when the
    scheduler or early stopping ended it sooner, "error" when it failed. By trial id: the
    order they were sampled in (Ray gives a restored search's in another)."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name.removeprefix("ray_")
        epoch = metrics.get("epoch", 0)
        if result.error is not None:
            status = "error"
        else:
            run_config = load_config_file(models / trial_id / "config.json")
            status = "finished" if epoch >= run_config["trainer"]["epochs"] else "stopped"
        rows.append(TrialRow(
            trial_id=trial_id,
            values={key: result.config.get(key) for key in keys},
            best=metrics.get(best_key),
            epochs=epoch,
            status=status,
            run_dir=str(readable_path(models / trial_id)) if (models / trial_id).is_dir() else "",
        ))  # fmt: skip
    return sorted(rows, key=lambda row: row.trial_id)


def best_trial(rows: list[TrialRow], mode: str, results: Iterable[Any]) -> TrialRow:
    """The row with the best result ("min" or "max"); `TrainingFailed` if no trial reported one
    (the first failure named)."""
    finished = [row for row in rows if row.best is not None]
    if not finished:
        raise TrainingFailed(f"no trial reported a result; {_first_failure(results)}")
    return (min if mode == "min" else max)(finished, key=lambda row: row.best)


def _first_failure(results: Iterable[Any]) -> str:
    """Why the first failed trial (by id) failed, in a line: the last line of its error (the
    trial's own one-line message), and Ray's file with the whole traceback."""
    failed = sorted((Path(r.path).name, r) for r in results if r.error is not None)
    if not failed:
        return "none failed either: each was stopped before its first epoch ended"
    name, result = failed[0]
    lines = [line.strip() for line in str(result.error).splitlines() if line.strip()]
    last = lines[-1] if lines else type(result.error).__name__
    error_file = readable_path(Path(result.path) / "error.txt")
    return f"trial {name.removeprefix('ray_')} failed: {cut(last, 300)} (all of it: {error_file})"


def _columns(rows: list[TrialRow], best_key: str) -> list[str]:
    keys = list(rows[0].values) if rows else []
    return ["trial_id", *keys, best_key, "epochs", "status", "run_dir"]


def _cells(row: TrialRow) -> list[Any]:
    best = "" if row.best is None or math.isinf(row.best) else row.best
    return [row.trial_id, *row.values.values(), best, row.epochs, row.status, row.run_dir]


def write_trials_csv(path: Path, rows: list[TrialRow], best_key: str) -> None:
    """One row per trial, in trial order; a trial without a result has an empty best."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(_columns(rows, best_key))
    writer.writerows(_cells(row) for row in rows)
    atomic_write(path, lambda file: file.write(text.getvalue().encode("utf-8")))


def trials_table(rows: list[TrialRow], best_key: str) -> str:
    """The trials as aligned text columns, the best value with 6 significant digits."""
    header = _columns(rows, best_key)
    body = [
        [f"{cell:.6g}" if isinstance(cell, float) else str(cell) for cell in _cells(row)]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in [header, *body])  # fmt: skip


def best_config(run_config: Path, base: dict, trial_settings: dict[str, Any]) -> dict:
    """The config the best trial ran (its run's config.json: every value resolved, its seed
    included) as a config to train on its own: the keys tune.py set for every trial
    (`save_dir`, `trial_settings`) back to the base config's values, and no `code_version`
    (train.py records its own)."""
    config = load_config_file(run_config)
    config.pop("code_version", None)
    keys = ["trainer.save_dir", *trial_settings]
    restored = [override(key, reduce(operator.getitem, key.split("."), base)) for key in keys]
    return apply_overrides(config, restored)
