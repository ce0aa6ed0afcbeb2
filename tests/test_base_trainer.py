"""BaseTrainer's epoch loop: best model, early stopping, periodic checkpoints, keep_last."""

from pathlib import Path

import pytest
import torch
from torch import nn

from base import BaseTrainer, Hook, TensorDataLoader
from builder import build_hooks, trainer_options
from utils.config.check import resolve_config
from utils.errors import UserError
from utils.run.dirs import create_run_dirs

BASE_CONFIG = {
    "name": "toy",
    "arch": {"type": "Linear"},
    "data_loader": {"type": "None"},
    "optimizer": {"type": "SGD"},
    "loss": "nll_loss",
}


class ScriptedTrainer(BaseTrainer):
    """One batch, so one optimizer step, per epoch; validation reports the next scripted
    `val_loss`. The built-in hooks come from the trainer options, as in train.py."""

    def __init__(self, val_losses: list[float], **options) -> None:
        config = resolve_config({**BASE_CONFIG, "trainer": {"progress_bar": False, **options}})
        model = nn.Linear(2, 1)
        loader = TensorDataLoader((torch.ones(1, 2),), batch_size=1, shuffle=False)
        self.val_losses = val_losses
        self.epochs_run: list[int] = []
        super().__init__(
            {"model": model}, {"model": torch.optim.SGD(model.parameters(), lr=0.1)}, loader,
            device=torch.device("cpu"), config=config, valid_data_loader=loader,
            hooks=build_hooks(config, {}), **trainer_options(config),
        )  # fmt: skip

    def logged_names(self) -> list[str]:
        return ["loss", "val_loss"]

    def train_step(self, batch) -> dict[str, torch.Tensor]:
        (inputs,) = batch
        loss = self.models["model"](inputs).sum()
        self.updates.backward(loss)
        self.updates.step(self.optimizers["model"])
        self.epochs_run.append(self.epoch + 1)
        return {"loss": loss}

    def validation_step(self, batch) -> dict[str, torch.Tensor]:
        return {"loss": torch.tensor(self.val_losses[self.epoch])}  # self.epoch: epochs done


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


def test_early_stop_without_a_monitor_is_named_once_and_stops_nothing(tmp_path, caplog) -> None:
    """Turning the monitor off (as a run without validation does) leaves `early_stop` nothing
    to count: the run says so as it is built, and trains every epoch."""
    caplog.set_level("WARNING")
    trainer = ScriptedTrainer([5, 6, 7, 8, 9], epochs=5, early_stop=2, tensorboard=False)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [
        "trainer.early_stop: 2 has no monitored value to count epochs without "
        "improvement (trainer.monitor is 'off'); the run will not stop early"
    ]
    trainer.train(create_run_dirs(tmp_path, "toy"))
    assert trainer.epochs_run == [1, 2, 3, 4, 5]
    caplog.clear()
    ScriptedTrainer([1], epochs=1, early_stop=2, monitor="min val_loss", tensorboard=False)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


class StopsInValidation(Hook):
    def after_validation(self, trainer: BaseTrainer) -> None:
        trainer.request_stop()


def test_a_stop_asked_for_in_validation_ends_the_run_once_its_epoch_is_saved(tmp_path) -> None:
    """It takes effect after `after_epoch`, where the Checkpointer saves: raised after
    `after_validation`, the epoch's work was neither counted nor saved."""
    trainer = ScriptedTrainer([5, 4, 3], epochs=3, save_period=100, tensorboard=False)
    trainer.hooks.insert(0, StopsInValidation())
    run = create_run_dirs(tmp_path, "toy")
    trainer.train(run)
    assert (trainer.epochs_run, trainer.epoch) == ([1], 1)
    assert saved_epochs(run.models) == [1]


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


@pytest.mark.parametrize(
    ("name", "suggested"),
    [("val_mae", "'val_MeanAbsoluteError'"), ("val_MSE", "'val_MeanSquaredError'"),
     ("val_mean_absolute_error", "'val_MeanAbsoluteError'")],
)  # fmt: skip
def test_a_monitor_that_abbreviates_a_metric_class_is_pointed_to_it(name, suggested) -> None:
    """A torchmetrics class logs under its class name; its initials (`mae`) are what a user
    types, and the suggestion names that value first, not a look-alike (`val_r2`)."""
    logged = ["loss", "val_loss", "val_r2", "val_MeanAbsoluteError", "val_MeanSquaredError"]

    class Regression(ScriptedTrainer):
        def logged_names(self) -> list[str]:
            return logged

    with pytest.raises(UserError) as error:
        Regression([1], epochs=1, monitor=f"min {name}")
    assert f"is not logged by this run; did you mean {suggested}" in str(error.value)


def test_resume_restores_counters(tmp_path: Path) -> None:
    first = ScriptedTrainer([5, 4, 6], epochs=2, monitor="min val_loss", tensorboard=False)
    run = create_run_dirs(tmp_path, "toy")
    first.train(run)
    second = ScriptedTrainer([5, 4, 6], epochs=3, monitor="min val_loss", tensorboard=False)
    second.load_state_dict(load(run.models / "checkpoint-epoch2.pth"))
    second.train(run)
    assert second.epochs_run == [3]
    assert (second.step, second.monitor.best, second.monitor.not_improved_count) == (3, 4, 1)
    weights = load(run.models / "checkpoint-epoch2.pth")["state_dict"]
    assert all(torch.equal(weights[k], first.bare_models["model"].state_dict()[k]) for k in weights)
