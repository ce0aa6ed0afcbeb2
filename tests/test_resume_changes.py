"""Resuming with a changed config (base/resume_changes.py): a change the restored state
contradicts is refused in one line, with nothing written; what else changed is logged. (The
resume_changes unit's test_optimizer_argument_changes.py applies changed optimizer arguments.)"""

import logging
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TrainedRun, load, run_dir, shrunk, snapshot
from test_cli_errors import assert_refused, run_in_process
from torch import nn

import train
from base import BaseTrainer, TensorDataLoader, resume_changes
from base.resume_changes import resume_change_lines, resume_with_changes
from builder import build_hooks, build_lr_schedulers, build_optimizers, trainer_options
from utils.config.check import resolve_config

CONFIG = str(ROOT / "config" / "config.json")


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["optimizer.type=SGD", "optimizer.args={lr: 0.01}"],
         ["optimizer.type: 'Adam' -> 'SGD' on resume", "state is Adam's",
          "to switch optimizer, fine-tune: python train.py -c CONFIG -r CHECKPOINT"]),
        (["lr_scheduler.args.gamma=0.5"],
         ["lr_scheduler.args.gamma: 0.1 -> 0.5 on resume", "fine-tune"]),
        (["lr_scheduler.interval=step"], ["lr_scheduler.interval: None -> 'step'", "fine-tune"]),
        (["lr_scheduler=null"], ["lr_scheduler: removed on resume", "fine-tune"]),
        (["seed=5"], ["seed: 0 -> 5 on resume", "sample order", "fine-tune"]),
    ],
)  # fmt: skip
def test_a_change_the_restored_state_contradicts_is_refused_and_nothing_is_written(
    tmp_path: Path, shrunk_run: TrainedRun, capsys, overrides: list[str], fragments: list[str]
) -> None:
    models = shrunk_run.copy_to(tmp_path).models
    before = snapshot(tmp_path / "saved")
    argv = ["-r", str(models / "checkpoint-epoch1.pth")]
    argv += [item for override in overrides for item in ("-o", override)]
    assert_refused(train.main, argv, capsys, *fragments)
    assert snapshot(tmp_path / "saved") == before


def test_without_the_resume_changes_unit_a_changed_argument_is_refused(
    tmp_path: Path, shrunk_run: TrainedRun, capsys, monkeypatch
) -> None:
    """A copy made without base/optimizer_argument_changes.py: the restored optimizer would
    override a changed `optimizer.args` value, so it is refused, naming the key and the unit."""
    monkeypatch.setattr(resume_changes, "has_unit", lambda module: False)
    models = shrunk_run.copy_to(tmp_path).models
    before = snapshot(tmp_path / "saved")
    argv = ["-r", str(models / "checkpoint-epoch1.pth"), "--lr", "0.0001"]
    assert_refused(train.main, argv, capsys,
                   "optimizer.args.lr: 0.001 -> 0.0001 on resume: this copy has no "
                   "base/optimizer_argument_changes.py (the resume_changes unit; `make update "
                   "WITH=resume_changes` adds it), so to change it, fine-tune")  # fmt: skip
    assert snapshot(tmp_path / "saved") == before


def test_the_data_loader_is_not_changed_in_the_middle_of_an_epoch(tmp_path: Path, capsys) -> None:
    """A step checkpoint counts the batches done in the old loader's batches: with another
    batch size the resumed epoch would skip other samples than the ones it trained on."""
    save_dir = tmp_path / "saved"
    steps = ["-o", "trainer.epochs=1", "-o", "trainer.save_every_steps=2",
             "-o", "trainer.tensorboard=false"]  # fmt: skip
    code, stderr = run_in_process(train.main, ["-c", CONFIG, *shrunk(save_dir), *steps], capsys)
    assert code == 0, stderr
    checkpoint = run_dir(save_dir) / "checkpoint-step2.pth"
    assert load(checkpoint)["batches_done"] == 2
    before = snapshot(save_dir)
    assert_refused(train.main, ["-r", str(checkpoint), "--bs", "16"], capsys,
                   "data_loader.args.batch_size: 32 -> 16 on resume 2 batches into epoch 1",
                   "resuming from an epoch checkpoint")  # fmt: skip
    # Nor its groups of batches, nor its length: the first resumed group would be cut.
    for change, was in (("trainer.accumulate_steps=3", 1), ("trainer.len_epoch=2", 3)):
        key, _, now = change.partition("=")
        assert_refused(train.main, ["-r", str(checkpoint), "-o", change], capsys,
                       f"{key}: {was} -> {now} on resume 2 batches into epoch 1, which were "
                       "counted in the old groups and epoch; change it when resuming from an "
                       "epoch checkpoint")  # fmt: skip
    assert snapshot(save_dir) == before


def one_cycle_run(save_dir: Path, capsys) -> str:
    """A run of the shrunk config under OneCycleLR; its first epoch's checkpoint."""
    one_cycle = ["-o", "lr_scheduler={type: OneCycleLR, args: {max_lr: 0.01}}",
                 "-o", "trainer.tensorboard=false"]  # fmt: skip
    code, stderr = run_in_process(train.main, ["-c", CONFIG, *shrunk(save_dir), *one_cycle], capsys)
    assert code == 0, stderr
    return str(run_dir(save_dir) / "checkpoint-epoch1.pth")


def test_one_cycle_schedule_keeps_its_length(tmp_path: Path, capsys) -> None:
    """OneCycleLR's length is trainer.epochs x steps per epoch, fixed when it starts: more
    epochs on resume (which crashed at the first step) are refused."""
    checkpoint = one_cycle_run(tmp_path / "saved", capsys)
    before = snapshot(tmp_path / "saved")
    assert_refused(train.main, ["-r", checkpoint, "-o", "trainer.epochs=3"], capsys,
                   "trainer.epochs: 2 -> 3 would change the length of the restored one-cycle "
                   "schedule (lr_scheduler: total_steps 6 -> 9", "fine-tune")  # fmt: skip
    assert snapshot(tmp_path / "saved") == before


class Toy(BaseTrainer):
    """Models of one weight each, trained a step per epoch, each step recording the lr in
    force; the logged loss is constant, so ReduceLROnPlateau acts on the epoch alone."""

    def __init__(
        self, optimizer: dict, lr_scheduler: dict | None, epochs: int, arch: dict | None = None
    ) -> None:
        config = resolve_config({
            "name": "toy", "arch": arch or {"type": "Linear"}, "data_loader": {"type": "None"},
            "optimizer": optimizer, "lr_scheduler": lr_scheduler,
            "trainer": {"epochs": epochs, "progress_bar": False, "tensorboard": False},
        })  # fmt: skip
        torch.manual_seed(0)
        models = {name: nn.Linear(1, 1, bias=False) for name in arch or ["model"]}
        self.model_names = tuple(models)
        optimizers = build_optimizers(config, models)
        schedulers, intervals = build_lr_schedulers(config, optimizers, steps_per_epoch=1)
        loader = TensorDataLoader((torch.ones(1, 1),), batch_size=1, shuffle=False)
        self.lrs: list[float] = []
        super().__init__(
            models, optimizers, loader, device=torch.device("cpu"), config=config,
            lr_schedulers=schedulers, hooks=build_hooks(config, intervals),
            **trainer_options(config),
        )  # fmt: skip

    def logged_names(self) -> list[str]:
        return ["loss"]

    def train_step(self, batch) -> dict[str, torch.Tensor]:
        (inputs,) = batch
        self.updates.backward(sum(model(inputs).sum() for model in self.models.values()))
        for optimizer in self.optimizers.values():
            self.lrs.append(optimizer.param_groups[0]["lr"])
            self.updates.step(optimizer)
        return {"loss": torch.tensor(1.0)}


def sgd(lr: float, **args) -> dict:
    return {"type": "SGD", "args": {"lr": lr, **args}}


SCHEDULES = {
    "none": None,
    "StepLR": {"type": "StepLR", "args": {"step_size": 2, "gamma": 0.5}},
    "CosineAnnealingLR": {"type": "CosineAnnealingLR", "args": {"T_max": 5}},
    "SequentialLR": {"type": "SequentialLR", "args": {"milestones": [4], "schedulers": [
        {"type": "LinearLR", "args": {"start_factor": 0.1, "total_iters": 4}},
        {"type": "ExponentialLR", "args": {"gamma": 0.8}}]}},
    "ReduceLROnPlateau": {"type": "ReduceLROnPlateau", "args": {"patience": 0, "factor": 0.5}},
}  # fmt: skip


def test_an_unchanged_config_changes_nothing() -> None:
    """Adam keeps `betas` as a tuple and the config a list (config/gan.json): no change."""
    adam = {"type": "Adam", "args": {"lr": 0.1, "betas": [0.5, 0.999]}}
    first = Toy(adam, SCHEDULES["StepLR"], epochs=1)
    first.train(None)
    resumed = Toy(adam, SCHEDULES["StepLR"], epochs=2)
    assert resume_with_changes(resumed, first.state_dict()) == {}
    resumed.train(None)
    assert resumed.lrs == [0.1]


def test_change_lines_give_applied_keys_and_more_epochs_info_lines_and_warn_of_the_others() -> None:
    old = {"optimizer": {"type": "Adam", "args": {"lr": 0.1}},
           "trainer": {"epochs": 2, "log_step": 10}}  # fmt: skip
    new = {"optimizer": {"type": "Adam", "args": {"lr": 0.2, "betas": [0.8, 0.9]}},
           "trainer": {"epochs": 3, "log_step": 5}}  # fmt: skip
    applied = {
        "optimizer.args.lr": "optimizer.args.lr: 0.1 -> 0.2, applied (...)",
        "optimizer.args.betas": "optimizer.args.betas: (0.9, 0.999) -> [0.8, 0.9], applied",
    }
    assert resume_change_lines(old, new, applied) == [
        (logging.INFO, "config changed on resume: optimizer.args.lr: 0.1 -> 0.2, applied (...)"),
        (logging.INFO, "config changed on resume: optimizer.args.betas: (0.9, 0.999) -> "
                       "[0.8, 0.9], applied"),
        (logging.INFO, "config changed on resume: trainer.epochs: 2 -> 3"),  # the routine one
        (logging.WARNING, "config changed on resume: trainer.log_step: 10 -> 5"),
    ]  # fmt: skip
