"""LR schedules: `lr_scheduler.interval` (per step or per epoch), nested scheduler nodes
(warmup then cosine), OneCycleLR's length filled in, and exact mid-epoch resume of a schedule."""

import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, load, run_dir, run_script
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.optim import lr_scheduler as schedulers

from base import BaseTrainer, Hook
from builder import build_lr_schedulers, build_trainer, trainer_keys
from trainer.hooks import LRSchedulerStep
from utils.config.check import resolve_config
from utils.errors import UserError
from utils.run.dirs import create_run_dirs
from utils.seed import seed_everything

LR = 1e-3
EPOCHS, LEN_EPOCH = 3, 4  # 12 optimizer steps: through the warmup, the milestone and 2 epoch ends
WARMUP_COSINE = {
    "type": "SequentialLR",
    "args": {
        "schedulers": [
            {"type": "LinearLR", "args": {"start_factor": 0.1, "total_iters": 5}},
            {"type": "CosineAnnealingLR", "args": {"T_max": 20}},
        ],
        "milestones": [5],
    },
    "interval": "step",
}


def raw_config(save_dir: Path, lr_scheduler: dict, **trainer: object) -> dict:
    """LeNet on the bundled MNIST subset: 3 epochs of 4 batches of 32, no validation."""
    return {
        "name": "Schedules",
        "seed": 0,
        "arch": {"type": "LeNet", "args": {}},
        "data_loader": {
            "type": "Mnist5kTensorDataLoader",
            "args": {"data_dir": str(ROOT / "data"), "batch_size": 32, "validation_split": 0},
        },
        "optimizer": {"type": "Adam", "args": {"lr": LR}},
        "loss": "nll_loss",
        "lr_scheduler": lr_scheduler,
        "trainer": {
            "epochs": EPOCHS, "len_epoch": LEN_EPOCH, "save_dir": str(save_dir),
            "progress_bar": False, "tensorboard": False, **trainer,
        },
    }  # fmt: skip


def build(raw: dict) -> BaseTrainer:
    """What train.py does before training: resolve the config, seed, build on the CPU."""
    config = resolve_config(raw, trainer_keys)
    seed_everything(config["seed"])
    return build_trainer(config, torch.device("cpu"))


class RecordLR(Hook):
    """The learning rate before training and after each optimizer step (placed last, so after
    the schedulers stepped)."""

    def __init__(self) -> None:
        self.initial: float | None = None
        self.after_steps: list[float] = []

    def before_train(self, trainer: BaseTrainer) -> None:
        self.initial = lr_of(trainer)

    def after_step(self, trainer: BaseTrainer) -> None:
        self.after_steps.append(lr_of(trainer))


def lr_of(trainer: BaseTrainer) -> float:
    return trainer.optimizers["model"].param_groups[0]["lr"]


def train_recording(raw: dict, save_dir: Path) -> tuple[BaseTrainer, RecordLR]:
    trainer = build(raw)
    recorder = RecordLR()
    trainer.hooks.append(recorder)
    trainer.train(create_run_dirs(save_dir, raw["name"]))
    return trainer, recorder


def intervals(trainer: BaseTrainer) -> dict[str, str]:
    """What the run's one LRSchedulerStep hook steps each scheduler by."""
    (hook,) = [hook for hook in trainer.hooks if isinstance(hook, LRSchedulerStep)]
    return hook.intervals


def reference_lrs(make_scheduler, n_steps: int) -> list[float]:
    """The lr before any step, then after each of `n_steps` steps of a hand-built scheduler."""
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=LR)
    scheduler = make_scheduler(optimizer)
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(n_steps):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def warmup_cosine(optimizer: torch.optim.Optimizer) -> schedulers.SequentialLR:
    warmup = schedulers.LinearLR(optimizer, start_factor=0.1, total_iters=5)
    cosine = schedulers.CosineAnnealingLR(optimizer, T_max=20)
    return schedulers.SequentialLR(optimizer, [warmup, cosine], milestones=[5])


def write_config(tmp_path: Path, raw: dict) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    return str(path)


def scalars(save_dir: Path, tag: str, name: str = "Schedules") -> list[tuple[int, float]]:
    log = save_dir / "log" / name / run_dir(save_dir, name).name
    events = EventAccumulator(str(log), size_guidance={"scalars": 0}).Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


# ---------------------------------------------------------------- warmup then cosine, per step


def test_warmup_then_cosine_steps_once_per_optimizer_step(tmp_path: Path) -> None:
    trainer, recorder = train_recording(raw_config(tmp_path, WARMUP_COSINE), tmp_path)
    n_steps = EPOCHS * LEN_EPOCH
    assert trainer.step == n_steps
    scheduler = trainer.lr_schedulers["model"]
    assert isinstance(scheduler, schedulers.SequentialLR)
    nested = [type(s) for s in scheduler._schedulers]  # built on the run's optimizer
    assert nested == [schedulers.LinearLR, schedulers.CosineAnnealingLR]
    expected = reference_lrs(warmup_cosine, n_steps)
    assert [recorder.initial, *recorder.after_steps] == expected
    assert recorder.initial == pytest.approx(0.1 * LR)  # the warmup's start
    assert recorder.after_steps[4] == pytest.approx(LR)  # the milestone: cosine from the top
    assert scheduler.last_epoch == n_steps  # not also stepped at the ends of epochs


def test_a_nested_node_error_names_its_path() -> None:
    node = json.loads(json.dumps(WARMUP_COSINE))
    node["args"]["schedulers"][1]["args"] = {"Tmax": 20}
    raw = raw_config(Path("unused"), node)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    with pytest.raises(
        UserError, match=r"^lr_scheduler\.args\.schedulers\[1\]\.args\.Tmax: .*'T_max'"
    ):
        build_lr_schedulers(resolve_config(raw), {"model": optimizer}, LEN_EPOCH)


# ---------------------------------------------------------------- exact resume mid-epoch


def weights_equal(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("step", [5, 10])  # in epoch 2, just past the milestone; in epoch 3
def test_a_per_step_schedule_resumes_exactly_from_the_middle_of_an_epoch(tmp_path, step) -> None:
    raw = raw_config(tmp_path, WARMUP_COSINE, save_every_steps=5)
    uninterrupted, _ = train_recording(raw, tmp_path)
    (models,) = (tmp_path / "models" / "Schedules").iterdir()
    state = load(models / f"checkpoint-step{step}.pth")
    assert state["step"] == step and state["batches_done"] == step % LEN_EPOCH  # mid-epoch
    assert state["lr_scheduler"]["last_epoch"] == step  # saved after the scheduler stepped

    resumed = build(raw)
    resumed.load_state_dict(state)
    resumed.train(None)
    assert resumed.step == uninterrupted.step == EPOCHS * LEN_EPOCH
    assert weights_equal(resumed.bare_model.state_dict(), uninterrupted.bare_model.state_dict())
    assert (
        resumed.lr_schedulers["model"].state_dict()
        == uninterrupted.lr_schedulers["model"].state_dict()
    )
    assert lr_of(resumed) == lr_of(uninterrupted)


# ---------------------------------------------------------------- OneCycleLR out of the box


def test_one_cycle_with_only_max_lr_runs_one_cycle_over_the_run(tmp_path: Path) -> None:
    """No interval, no length: OneCycleLR steps per optimizer step over epochs x steps per
    epoch, so the last optimizer step runs at the cycle's final (lowest) lr."""
    node = {"type": "OneCycleLR", "args": {"max_lr": 0.01}}
    raw = raw_config(tmp_path / "saved", node, tensorboard=True, log_step=1, save_period=1)
    result = run_script("train.py", "-c", write_config(tmp_path, raw))
    assert result.returncode == 0, result.stderr
    models = run_dir(tmp_path / "saved", "Schedules")
    n_steps = EPOCHS * LEN_EPOCH
    for epoch in range(1, EPOCHS + 1):
        state = load(models / f"checkpoint-epoch{epoch}.pth")["lr_scheduler"]
        assert state["total_steps"] == n_steps
        assert state["last_epoch"] == epoch * LEN_EPOCH  # once per optimizer step

    def one_cycle(optimizer: torch.optim.Optimizer) -> schedulers.OneCycleLR:
        return schedulers.OneCycleLR(optimizer, max_lr=0.01, total_steps=n_steps)

    expected = reference_lrs(one_cycle, n_steps)
    logged = [value for _, value in scalars(tmp_path / "saved", "train/lr")]
    assert logged == pytest.approx(expected[1:], rel=1e-6)
    assert max(logged) == pytest.approx(0.01, rel=0.05)  # the peak was reached
    # The lr the last optimizer step used (set after step n - 1) is the cycle's end:
    # max_lr / div_factor / final_div_factor.
    assert logged[n_steps - 2] == pytest.approx(0.01 / 25 / 1e4)
    final = load(models / f"checkpoint-epoch{EPOCHS}.pth")
    assert final["optimizer"]["param_groups"][0]["lr"] == pytest.approx(expected[-1])


def test_one_cycle_length_counts_optimizer_steps_with_accumulation(tmp_path: Path) -> None:
    """Whole epochs of 8 batches in groups of 3: 3 optimizer steps an epoch (the last group
    is short), so total_steps is 6 for 2 epochs and the run ends on the cycle's last step."""
    node = {"type": "OneCycleLR", "args": {"max_lr": 0.01}}
    raw = raw_config(tmp_path, node, epochs=2, len_epoch=None, accumulate_steps=3)
    # 200 of the 1,000 test images to train on (8 batches of 25), the rest to validate on
    raw["data_loader"]["args"].update(training=False, validation_split=800, batch_size=25)
    trainer, recorder = train_recording(raw, tmp_path)
    assert trainer.batches.batches_per_epoch == 8
    scheduler = trainer.lr_schedulers["model"]
    assert scheduler.total_steps == trainer.step == scheduler.last_epoch == 2 * 3
    assert intervals(trainer) == {"model": "step"}

    def one_cycle(optimizer: torch.optim.Optimizer) -> schedulers.OneCycleLR:
        return schedulers.OneCycleLR(optimizer, max_lr=0.01, total_steps=6)

    assert [recorder.initial, *recorder.after_steps] == reference_lrs(one_cycle, 6)


# ---------------------------------------------------------------- per-epoch schedules


def test_an_epoch_scheduler_steps_once_per_epoch_by_default(tmp_path: Path) -> None:
    node = {"type": "StepLR", "args": {"step_size": 1, "gamma": 0.5}}
    trainer, recorder = train_recording(raw_config(tmp_path, node), tmp_path)
    assert intervals(trainer) == {"model": "epoch"}
    per_epoch = [LR * 0.5**epoch for epoch in range(EPOCHS)]
    steps = recorder.after_steps
    assert steps == pytest.approx([lr for lr in per_epoch for _ in range(LEN_EPOCH)])
    assert trainer.lr_schedulers["model"].last_epoch == EPOCHS
    assert lr_of(trainer) == pytest.approx(LR * 0.5**EPOCHS)


def test_an_unknown_interval_is_a_one_line_config_error(tmp_path: Path) -> None:
    node = {"type": "StepLR", "args": {"step_size": 1}}
    config = write_config(tmp_path, raw_config(tmp_path / "saved", node))
    result = run_script("train.py", "-c", config, "-o", "lr_scheduler.interval=batch")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: lr_scheduler.interval: 'batch' is not valid; expected")
    assert not (tmp_path / "saved").exists()  # nothing was started
