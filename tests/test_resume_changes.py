"""Resuming with a changed optimizer or schedule (base/resume_changes.py): a changed optimizer
argument is in force in the restored optimizer, and in config.json; a change the restored
state contradicts is refused in one line, with nothing written."""

import logging
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TrainedRun, load, read_json, run_dir, shrunk
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_cli_errors import assert_refused, run_in_process
from torch import nn

import train
from base import BaseTrainer, TensorDataLoader
from base.resume_changes import resume_change_lines, resume_with_changes
from builder import build_hooks, build_lr_schedulers, build_optimizers, trainer_options
from utils.config.check import resolve_config
from utils.errors import UserError

CONFIG = str(ROOT / "config" / "config.json")


def snapshot(models: Path) -> dict[str, bytes]:
    """Every file of a run directory (recursively) with its bytes: to show nothing changed."""
    return {str(p.relative_to(models)): p.read_bytes() for p in models.rglob("*") if p.is_file()}


def test_a_new_lr_and_other_optimizer_arguments_are_in_force_after_resume(
    tmp_path: Path, shrunk_run: TrainedRun, capsys
) -> None:
    """`--lr` on resume is the lr the resumed epoch trains with (TensorBoard's `lr`, the next
    checkpoint) and the one config.json records; so are the other changed arguments."""
    models = shrunk_run.copy_to(tmp_path).models
    changes = ["optimizer.args.weight_decay=0.01", "optimizer.args.betas=[0.8, 0.99]"]
    argv = ["-r", str(models / "checkpoint-epoch1.pth"), "--lr", "0.0001"]
    argv += [item for change in changes for item in ("-o", change)]
    code, stderr = run_in_process(train.main, argv, capsys)
    assert code == 0, stderr

    resumed = load(models / "checkpoint-epoch2.pth")
    (group,) = resumed["optimizer"]["param_groups"]
    assert (group["lr"], group["initial_lr"]) == (0.0001, 0.0001)
    assert (group["weight_decay"], list(group["betas"])) == (0.01, [0.8, 0.99])
    assert resumed["lr_scheduler"]["base_lrs"] == [0.0001]
    config = read_json(models / "config.json")
    assert config["optimizer"]["args"] == {"lr": 0.0001, "weight_decay": 0.01,
                                           "amsgrad": True, "betas": [0.8, 0.99]}  # fmt: skip
    assert resumed["config"]["optimizer"] == config["optimizer"]
    log_dir = tmp_path / "saved" / "log" / "Mnist_LeNet" / models.name
    lrs = EventAccumulator(str(log_dir)).Reload().Scalars("epoch/lr")
    assert [(e.step, e.value) for e in lrs] == [(3, pytest.approx(0.001)),
                                                (6, pytest.approx(0.0001))]  # fmt: skip
    log = (log_dir / "info.log").read_text()
    assert (
        "INFO base.resume_changes: " not in log  # logged by train, as the other changes
        and "INFO train: config changed on resume: optimizer.args.lr: 0.001 -> 0.0001, applied "
        "to the restored optimizer (new base lr: current lr 0.001 -> 0.0001, the schedule going "
        "on from where it stood)"
        in log
    )
    assert "config changed on resume: optimizer.args.betas: (0.9, 0.999) -> (0.8, 0.99)" in log
    assert "WARNING train: config changed on resume: optimizer.args" not in log


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
    assert snapshot(save_dir) == before


def test_one_cycle_schedule_keeps_its_length_and_its_own_lr(tmp_path: Path, capsys) -> None:
    """OneCycleLR's length is trainer.epochs x steps per epoch, fixed when it starts: more
    epochs on resume (which crashed at the first step) are refused, and so are a new lr and
    betas, which it sets itself at every step."""
    save_dir = tmp_path / "saved"
    one_cycle = ["-o", "lr_scheduler={type: OneCycleLR, args: {max_lr: 0.01}}",
                 "-o", "trainer.tensorboard=false"]  # fmt: skip
    code, stderr = run_in_process(train.main, ["-c", CONFIG, *shrunk(save_dir), *one_cycle], capsys)
    assert code == 0, stderr
    checkpoint = str(run_dir(save_dir) / "checkpoint-epoch1.pth")
    before = snapshot(save_dir)
    assert_refused(train.main, ["-r", checkpoint, "-o", "trainer.epochs=3"], capsys,
                   "trainer.epochs: 2 -> 3 would change the length of the restored one-cycle "
                   "schedule (lr_scheduler: total_steps 6 -> 9", "fine-tune")  # fmt: skip
    assert_refused(train.main, ["-r", checkpoint, "--lr", "0.1"], capsys,
                   "optimizer.args.lr: OneCycleLR sets lr itself", "fine-tune")  # fmt: skip
    assert_refused(train.main, ["-r", checkpoint, "-o", "optimizer.args.betas=[0.8, 0.99]"],
                   capsys, "optimizer.args.betas: OneCycleLR sets betas itself")  # fmt: skip
    assert snapshot(save_dir) == before


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


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_a_new_lr_is_the_new_base_of_the_schedule_from_the_point_it_reached(
    schedule: str,
) -> None:
    """Resumed after 3 of 7 epochs with lr 0.01 instead of 0.1, every later step trains at
    the lr a run started with 0.01 has at that step (the schedule scaled by new/old)."""
    first = Toy(sgd(0.1), SCHEDULES[schedule], epochs=3)
    first.train(None)
    resumed = Toy(sgd(0.01), SCHEDULES[schedule], epochs=7)
    applied = resume_with_changes(resumed, first.state_dict())
    current = resumed.optimizers["model"].param_groups[0]["lr"]
    for scheduler in resumed.lr_schedulers.values():  # what a hook reading it would see
        assert scheduler.get_last_lr() == [current]
    resumed.train(None)
    started_with_it = Toy(sgd(0.01), SCHEDULES[schedule], epochs=7)
    started_with_it.train(None)
    assert resumed.lrs == pytest.approx(started_with_it.lrs[3:], rel=1e-12)
    assert set(applied) == {"optimizer.args.lr"}
    reached = first.optimizers["model"].param_groups[0]["lr"]
    if schedule != "none":  # the schedule has moved the lr from its base by epoch 3
        assert reached != 0.1 and resumed.lrs[0] == pytest.approx(reached / 10, rel=1e-12)


def test_an_argument_needing_state_the_restored_optimizer_lacks_is_refused() -> None:
    """Adam keeps `max_exp_avg_sq` only with amsgrad: turning it on mid-run would crash at the
    first step (KeyError), so it is refused, naming the key; turning it off is applied."""
    first = Toy({"type": "Adam", "args": {"amsgrad": False}}, None, epochs=1)
    first.train(None)
    refusal = r"optimizer.args.amsgrad: False -> True needs .*\(max_exp_avg_sq\); .* fine-tune"
    with pytest.raises(UserError, match=refusal):
        resume_with_changes(Toy({"type": "Adam", "args": {"amsgrad": True}}, None, epochs=2),
                            first.state_dict())  # fmt: skip
    first = Toy({"type": "Adam", "args": {"amsgrad": True}}, None, epochs=1)
    first.train(None)
    resumed = Toy({"type": "Adam", "args": {"amsgrad": False}}, None, epochs=2)
    assert set(resume_with_changes(resumed, first.state_dict())) == {"optimizer.args.amsgrad"}
    resumed.train(None)
    assert resumed.optimizers["model"].param_groups[0]["amsgrad"] is False


def test_an_unchanged_config_changes_nothing() -> None:
    """Adam keeps `betas` as a tuple and the config a list (config/gan.json): no change."""
    adam = {"type": "Adam", "args": {"lr": 0.1, "betas": [0.5, 0.999]}}
    first = Toy(adam, SCHEDULES["StepLR"], epochs=1)
    first.train(None)
    resumed = Toy(adam, SCHEDULES["StepLR"], epochs=2)
    assert resume_with_changes(resumed, first.state_dict()) == {}
    resumed.train(None)
    assert resumed.lrs == [0.1]


def test_a_run_trained_at_lr_0_keeps_its_schedule_only_at_lr_0() -> None:
    """With lr 0 every scheduled lr is 0: the point reached cannot be scaled to a new base."""
    schedule = SCHEDULES["StepLR"]
    first = Toy(sgd(0.0), schedule, epochs=1)
    first.train(None)
    with pytest.raises(UserError, match=r"optimizer\.args\.lr: the restored run trained with lr 0"):
        resume_with_changes(Toy(sgd(0.1), schedule, epochs=2), first.state_dict())
    first = Toy(sgd(0.0), None, epochs=1)  # without a schedule, the new lr is simply in force
    first.train(None)
    resumed = Toy(sgd(0.1), None, epochs=2)
    resume_with_changes(resumed, first.state_dict())
    resumed.train(None)
    assert resumed.lrs == [0.1]


def test_several_named_optimizers_each_take_their_own_changes() -> None:
    """A trainer with several models (like the GAN): changes name `optimizer.<name>.*`; a node
    shared by both models applies to both; a changed type names the model's optimizer."""
    arch = {"a": {"type": "Linear"}, "b": {"type": "Linear"}}
    named = {"a": sgd(0.1), "b": sgd(0.1)}
    first = Toy(named, SCHEDULES["StepLR"], epochs=3, arch=arch)
    first.train(None)
    resumed = Toy({"a": sgd(0.05), "b": sgd(0.1, momentum=0.9)}, SCHEDULES["StepLR"], 4, arch)
    applied = resume_with_changes(resumed, first.state_dict())
    assert set(applied) == {"optimizer.a.args.lr", "optimizer.b.args.momentum"}
    groups = {name: o.param_groups[0] for name, o in resumed.optimizers.items()}
    assert groups["a"]["lr"] == pytest.approx(first.optimizers["a"].param_groups[0]["lr"] / 2)
    assert (groups["b"]["lr"], groups["b"]["momentum"]) == (0.05, 0.9)  # decayed once, at 2

    with pytest.raises(UserError, match=r"optimizer.b.type: 'SGD' -> 'Adam' on resume"):
        resume_with_changes(Toy({"a": sgd(0.1), "b": {"type": "Adam"}}, None, 4, arch),
                            first.state_dict())  # fmt: skip
    shared = Toy(sgd(0.1), SCHEDULES["StepLR"], epochs=3, arch=arch)
    shared.train(None)
    applied = resume_with_changes(Toy(sgd(0.2), SCHEDULES["StepLR"], 4, arch), shared.state_dict())
    assert applied == {
        "optimizer.args.lr": "optimizer.args.lr: 0.1 -> 0.2, applied to the restored optimizers "
        "(a: new base lr: current lr 0.05 -> 0.1, the schedule going on from where it stood; "
        "b: new base lr: current lr 0.05 -> 0.1, the schedule going on from where it stood)"
    }


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
