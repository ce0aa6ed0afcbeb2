"""Changed optimizer arguments on resume (the resume_changes unit,
base/optimizer_argument_changes.py): in force in the restored optimizer and in config.json, a
new lr the new base of the schedule; what the restored state contradicts is refused."""

from pathlib import Path

import pytest
from conftest import TrainedRun, load, read_json
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_cli_errors import assert_refused, run_in_process
from test_resume_changes import (
    SCHEDULES,
    Toy,
    one_cycle_run,
    sgd,
    snapshot,
)

import train
from base.resume_changes import resume_with_changes
from utils.errors import UserError


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


def test_a_one_cycle_schedule_keeps_its_own_lr(tmp_path: Path, capsys) -> None:
    """A new lr and betas are refused under OneCycleLR, which sets both itself every step."""
    checkpoint = one_cycle_run(tmp_path / "saved", capsys)
    before = snapshot(tmp_path / "saved")
    assert_refused(train.main, ["-r", checkpoint, "--lr", "0.1"], capsys,
                   "optimizer.args.lr: OneCycleLR sets lr itself", "fine-tune")  # fmt: skip
    assert_refused(train.main, ["-r", checkpoint, "-o", "optimizer.args.betas=[0.8, 0.99]"],
                   capsys, "optimizer.args.betas: OneCycleLR sets betas itself")  # fmt: skip
    assert snapshot(tmp_path / "saved") == before


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
