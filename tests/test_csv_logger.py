"""metrics.csv: a row per epoch with every logged value, continued exactly on resume."""

import csv
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TrainedRun, load, make_trainer, toy_config
from test_cli_errors import assert_refused
from torch import nn

import train
from base import BaseTrainer, Hook, TensorDataLoader
from model.metric import accuracy
from trainer import Trainer
from trainer.hooks import CSVLogger
from utils.run.dirs import RunDirs, create_run_dirs

STEPS_PER_EPOCH = 7  # batches of 4, one optimizer step each


def toy_trainer(**options) -> Trainer:
    """A linear model on 7 unshuffled batches of 4, validated on 8 samples: the same each time."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(4 * STEPS_PER_EPOCH + 8, 5, generator=generator)
    target = torch.randint(3, (4 * STEPS_PER_EPOCH + 8,), generator=generator)
    train = TensorDataLoader((features[:-8], target[:-8]), 4, shuffle=False)
    valid = TensorDataLoader((features[-8:], target[-8:]), 4, shuffle=False)
    model = nn.Linear(5, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    config = toy_config(**{"epochs": 2, "monitor": "min val_loss", **options})
    return make_trainer(model, F.cross_entropy, optimizer, config, train, valid,
                        metric_fns={"accuracy": accuracy})  # fmt: skip


def read_csv(run: RunDirs) -> tuple[list[str], list[dict[str, str]]]:
    with (run.log / "metrics.csv").open(newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames), list(reader)


def without_time(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{name: value for name, value in row.items() if name != "wall_time"} for row in rows]


def test_one_row_per_epoch_with_every_logged_value(tmp_path: Path) -> None:
    trainer = toy_trainer()
    run = create_run_dirs(tmp_path, "toy", "run")
    trainer.train(run)
    columns, rows = read_csv(run)
    assert columns == ["epoch", "step", "wall_time", "loss", "accuracy", "val_loss",
                       "val_accuracy", "lr"]  # fmt: skip
    assert [(row["epoch"], row["step"]) for row in rows] == [("1", "7"), ("2", "14")]
    assert float(rows[0]["wall_time"]) <= float(rows[1]["wall_time"])
    last = rows[-1]
    for name, value in trainer.epoch_log.items():
        assert float(last[name]) == value, name  # written in full precision
    assert float(last["lr"]) == 0.1


@pytest.mark.parametrize(
    ("save_every_steps", "checkpoint"),
    [
        (5, "checkpoint-epoch1.pth"),  # an earlier checkpoint than the run reached
        (5, "checkpoint-step10.pth"),  # in the middle of epoch 2
        (7, "checkpoint-step7.pth"),  # epoch 1's last step, before its row was due
    ],
)
def test_a_resumed_run_continues_the_file_of_an_uninterrupted_one(
    tmp_path: Path, save_every_steps: int, checkpoint: str
) -> None:
    """The run resumed in its own directory, whose metrics.csv already has both epochs (as an
    attempt that went further leaves it), ends with the rows of the uninterrupted run: none
    twice, none missing, the same values."""
    run = create_run_dirs(tmp_path, "toy", "run")
    toy_trainer(save_every_steps=save_every_steps).train(run)
    _, uninterrupted = read_csv(run)
    state = load(run.models / checkpoint)
    resumed = toy_trainer(save_every_steps=save_every_steps)
    resumed.load_state_dict(state)
    started = time.time()
    resumed.train(run)
    _, rows = read_csv(run)
    assert without_time(rows) == without_time(uninterrupted)
    for row, old in zip(rows, uninterrupted, strict=True):
        if int(row["epoch"]) <= state["epoch"]:  # kept as it was
            assert row == old
        else:  # written again by the resumed run
            assert float(row["wall_time"]) >= round(started, 3) - 0.001


def test_a_run_started_again_without_a_checkpoint_starts_the_file_afresh(tmp_path) -> None:
    run = create_run_dirs(tmp_path, "toy", "run")
    toy_trainer().train(run)
    _, first = read_csv(run)
    stale = "epoch,step,wall_time,loss,old\n1,7,0.0,999.0,1\n2,14,0.0,999.0,1\n3,21,0.0,99"
    (run.log / "metrics.csv").write_text(stale)  # ending in a torn row, as no attempt leaves it
    toy_trainer().train(run)
    columns, rows = read_csv(run)
    assert "old" not in columns
    assert without_time(rows) == without_time(first)


class LateValue(Hook):
    """Adds `late` to the epoch log from epoch 2 on (as a value logged every k epochs would)."""

    def after_epoch(self, trainer: BaseTrainer) -> None:
        if trainer.epoch >= 2:
            trainer.epoch_log["late"] = 0.5


def test_a_value_that_first_appears_later_widens_the_header(tmp_path: Path) -> None:
    trainer = toy_trainer(epochs=3)
    trainer.hooks.insert(0, LateValue())
    run = create_run_dirs(tmp_path, "toy", "run")
    trainer.train(run)
    columns, rows = read_csv(run)
    assert columns[-1] == "late"
    assert [row["late"] for row in rows] == ["", "0.5", "0.5"]
    lines = (run.log / "metrics.csv").read_text().splitlines()
    assert {line.count(",") for line in lines} == {len(columns) - 1}  # no ragged row


def test_metrics_csv_false_writes_nothing_and_other_ranks_never_write(tmp_path) -> None:
    trainer = toy_trainer(metrics_csv=False)
    assert not any(isinstance(hook, CSVLogger) for hook in trainer.hooks)
    run = create_run_dirs(tmp_path, "toy", "run")
    trainer.train(run)
    assert not (run.log / "metrics.csv").exists()
    before = sorted(tmp_path.rglob("*"))
    toy_trainer().train(None)  # a rank that does not write
    assert sorted(tmp_path.rglob("*")) == before


def test_the_shipped_config_writes_metrics_csv(shrunk_run: TrainedRun) -> None:
    models = shrunk_run.models
    log = shrunk_run.save_dir / "log" / models.parent.name / models.name
    with (log / "metrics.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(row["epoch"], row["step"]) for row in rows] == [("1", "3"), ("2", "6")]
    assert {"loss", "accuracy", "top_k_acc", "val_loss", "val_accuracy", "lr"} <= rows[0].keys()
    best = load(models / "checkpoint-epoch2.pth")["monitor_best"]
    assert min(float(row["val_loss"]) for row in rows) == best


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda path: path.write_bytes(b"epoch,step\n1,\xff\xfe\n"), "UnicodeDecodeError"),
        (lambda path: (path.unlink(), path.mkdir()), "Is a directory"),
    ],
    ids=["not-utf-8", "a-directory"],
)
def test_a_resume_with_an_unreadable_metrics_csv_is_refused_before_it_trains(
    shrunk_run: TrainedRun, tmp_path, capsys, damage, problem
) -> None:
    """Before this was checked, the first failed with a traceback and the second trained an
    epoch and then failed to write the file. Refused before anything changes: the
    checkpoints, config.json (which a resume rewrites) and the log are as they were."""
    run = shrunk_run.copy_to(tmp_path)
    log = run.save_dir / "log" / run.models.parent.name / run.models.name
    damage(log / "metrics.csv")
    files = [*run.models.glob("*.pth"), run.models / "config.json", log / "info.log"]
    before = {path: path.read_bytes() for path in files}
    argv = ["-r", str(run.models), "-o", "trainer.epochs=3"]
    assert_refused(train.main, argv, capsys, f"{log / 'metrics.csv'}: cannot be read", problem)
    assert {path: path.read_bytes() for path in files} == before
    assert (log / "metrics.csv").is_dir() or (log / "metrics.csv").read_bytes().endswith(b"\xfe\n")
