"""Progress within an epoch: tqdm bars on a terminal, plain lines in a batch job's log."""

import logging

import torch
import torch.nn.functional as F
from conftest import make_trainer, toy_config
from torch import nn

from base import TensorDataLoader
from trainer.hooks.progress_bar import ProgressBar


def train_with(bar: ProgressBar, log_step: int = 2) -> None:
    """Two epochs of 5 batches of a toy classifier, with `bar` as its only progress hook."""
    torch.manual_seed(0)
    inputs, targets = torch.randn(20, 3), torch.randint(0, 2, (20,))
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    config = toy_config(epochs=2, log_step=log_step)
    trainer = make_trainer(model, F.cross_entropy, optimizer, config,
                           TensorDataLoader((inputs, targets), 4, shuffle=False))  # fmt: skip
    trainer.hooks.append(bar)
    trainer.train(None)


def test_off_a_terminal_plain_lines_replace_the_bar(caplog, capsys) -> None:
    with caplog.at_level(logging.INFO, logger="trainer.hooks.progress_bar"):
        train_with(ProgressBar(interactive=False, interval=0.0))
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 10  # interval 0: one line per step
    assert lines[0].startswith("batch 1/5 of epoch 1/2") and "batches/s" in lines[0]
    assert lines[-1].startswith("batch 5/5 of epoch 2/2  loss ")  # the last window's loss
    assert "\r" not in capsys.readouterr().err


def test_off_a_terminal_lines_come_at_most_every_interval(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="trainer.hooks.progress_bar"):
        train_with(ProgressBar(interactive=False, interval=3600.0))
    assert not caplog.records


def test_on_a_terminal_a_bar_per_epoch(capsys, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="trainer.hooks.progress_bar"):
        train_with(ProgressBar(interactive=True))
    err = capsys.readouterr().err
    assert "\r" in err and "epoch 1/2" in err and "epoch 2/2" in err and "5/5" in err
    assert "loss=" in err
    assert not caplog.records
