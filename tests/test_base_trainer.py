"""BaseTrainer's epoch loop: best model, early stopping, periodic checkpoints, keep_last."""

from pathlib import Path

import pytest
import torch
from torch import nn

from base import BaseTrainer
from utils.config import resolve_config
from utils.errors import UserError
from utils.run_dir import create_run_dirs

BASE_CONFIG = {
    "name": "toy",
    "arch": {"type": "Linear"},
    "data_loader": {"type": "None"},
    "optimizer": {"type": "SGD"},
    "loss": "nll_loss",
}


class ScriptedTrainer(BaseTrainer):
    """Each epoch takes one optimizer step and reports the next scripted `val_loss`."""

    def __init__(self, val_losses: list[float], **trainer_options) -> None:
        config = resolve_config({**BASE_CONFIG, "trainer": trainer_options})
        model = nn.Linear(2, 1)
        super().__init__(model, torch.optim.SGD(model.parameters(), lr=0.1), None, config)
        self.val_losses = val_losses
        self.epochs_run: list[int] = []

    def logged_names(self) -> list[str]:
        return ["loss", "val_loss"]

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.model(torch.ones(1, 2)).sum().backward()
        self.optimizer.step()
        self.step += 1
        self.epochs_run.append(epoch)
        return {"loss": 1.0, "val_loss": self.val_losses[epoch - 1]}

    def progress_state(self) -> dict:
        return {}  # an epoch is one step: never interrupted inside

    def load_progress_state(self, state: dict) -> None:
        assert state == {}


def saved_epochs(models: Path) -> list[int]:
    names = [p.stem.removeprefix("checkpoint-epoch") for p in models.glob("checkpoint-epoch*.pth")]
    return sorted(int(n) for n in names)


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def test_best_model_and_early_stop(tmp_path: Path) -> None:
    trainer = ScriptedTrainer([5, 3, 4, 2, 2.5, 2.1, 9, 9], epochs=8, monitor="min val_loss",
                              early_stop=3, save_period=100, tensorboard=False)  # fmt: skip
    run = create_run_dirs(tmp_path, "toy")
    trainer.train(run)
    assert trainer.epochs_run == [1, 2, 3, 4, 5, 6, 7]  # 3 epochs after the best (epoch 4)
    best = load(run.models / "model_best.pth")
    assert (best["epoch"], best["monitor_best"], best["not_improved_count"]) == (4, 2, 0)
    assert saved_epochs(run.models) == [7]  # the stopping epoch is always saved
    assert load(run.models / "checkpoint-epoch7.pth")["not_improved_count"] == 3


def test_max_mode_and_save_period(tmp_path: Path) -> None:
    trainer = ScriptedTrainer([1, 3, 2, 4, 0], epochs=5, monitor="max val_loss", save_period=2,
                              tensorboard=False)  # fmt: skip
    run = create_run_dirs(tmp_path, "toy")
    trainer.train(run)
    assert saved_epochs(run.models) == [2, 4, 5]  # every 2nd epoch, and the last
    assert load(run.models / "model_best.pth")["epoch"] == 4


def test_keep_last_prunes_old_checkpoints(tmp_path: Path) -> None:
    trainer = ScriptedTrainer([1] * 6, epochs=6, keep_last=2, tensorboard=False)
    run = create_run_dirs(tmp_path, "toy")
    trainer.train(run)
    assert saved_epochs(run.models) == [5, 6]
    assert not (run.models / "model_best.pth").exists()  # monitor is off by default


def test_monitor_must_name_a_logged_value() -> None:
    with pytest.raises(
        UserError, match=r"trainer.monitor: 'val_acc' is not logged.*valid: loss, val_loss"
    ):
        ScriptedTrainer([1], epochs=1, monitor="max val_acc")


def test_resume_restores_counters(tmp_path: Path) -> None:
    first = ScriptedTrainer([5, 4, 6], epochs=2, monitor="min val_loss", tensorboard=False)
    run = create_run_dirs(tmp_path, "toy")
    first.train(run)
    second = ScriptedTrainer([5, 4, 6], epochs=3, monitor="min val_loss", tensorboard=False)
    second.load_state_dict(load(run.models / "checkpoint-epoch2.pth"))
    second.train(run)
    assert second.epochs_run == [3]
    assert (second.step, second.monitor_best, second.not_improved_count) == (3, 4, 1)
    weights = load(run.models / "checkpoint-epoch2.pth")["state_dict"]
    assert all(torch.equal(weights[k], first.model.state_dict()[k]) for k in weights)
