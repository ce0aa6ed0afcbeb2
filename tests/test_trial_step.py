"""base/trial_step.py and the empty-data checks: a config value that fails only when used is
refused before the run directory exists, naming its node; the trial leaves no trace."""

import copy
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    ROOT,
    TrainedRun,
    assert_same_run,
    assert_same_state,
    load,
    make_trainer,
    run_dir,
    shrunk,
    toy_config,
)
from test_cli_errors import assert_refused
from torch import nn

import base.epoch_batches
import train
import utils.distributed.process_group
from base import BaseTrainer, TensorDataLoader
from base.epoch_batches import EpochBatches
from builder import build_trainer, trainer_keys
from model.metric import accuracy, top_k_acc
from utils.config.check import apply_overrides, load_config_file, resolve_config
from utils.errors import UserError

CONFIG = str(ROOT / "config" / "config.json")


def overrides(*settings: str) -> list[str]:
    return [item for setting in settings for item in ("-o", setting)]


# ---------------------------------------------------------------- refused through the CLI


@pytest.mark.parametrize(
    ("settings", "fragments"),
    [
        # Constructors that fail with other errors than ValueError or TypeError.
        (["arch.args.num_classes=-5"], ["arch.args: LeNet", "RuntimeError", "negative dimension"]),
        (["optimizer.args.betas=[0.9]"], ["optimizer.args.betas[1]: field required", "for Adam"]),
        (["lr_scheduler.args.last_epoch=5"], ["lr_scheduler.args: StepLR", "KeyError: param"]),
        # A string where a number belongs, which StepLR would meet only at its 10th step.
        (["lr_scheduler.args.gamma=x"], ["lr_scheduler.args.gamma", "'x'", "takes float"]),
        # Values that fail only when used: found by the trial step.
        (["lr_scheduler.args.step_size=0"], ["lr_scheduler: StepLR.step", "ZeroDivisionError"]),
        (
            ["loss={type: CrossEntropyLoss, args: {label_smoothing: 2.0}}"],
            ["loss: CrossEntropyLoss failed on the first training batch", "label_smoothing"],
        ),
        (  # a loss that does not fit the model's output
            ["loss=MSELoss"],
            ["loss: MSELoss failed", "(32, 1, 28, 28) float32, (32,) int64", "different to the"],
        ),
        (  # one that would broadcast (B, 1) outputs and (B,) targets into (B, B), with a warning
            ["arch.args.num_classes=1", "loss=MSELoss", "metrics=[]"],
            ["loss: MSELoss failed", "target size (torch.Size([32]))", "([32, 1]))"],
        ),
        (["arch.args.num_classes=1"], ["loss: nll_loss failed", "Target", "out of bounds"]),
        (["arch.args.in_channels=3"], ["arch: LeNet.forward failed", "3 channels"]),
        # Data that leaves nothing to train or validate on.
        (
            ["data_loader.args.validation_split=0.0001"],
            ["data_loader.args.validation_split: 0.0001 of 4000 samples", "none for validation"],
        ),
        (
            ["data_loader.args.validation_split=0.9999999999999"],
            ["data_loader.args.validation_split", "none for training"],
        ),
        (
            ["data_loader.args.batch_size=5000", "data_loader.args.drop_last=true"],
            ["data_loader.args.batch_size: 5000", "3600 samples", "data_loader.args.drop_last"],
        ),
        (
            ["data_loader.args.batch_size=5000", "data_loader.args.drop_last=true",
             "trainer.len_epoch=null"],
            ["data_loader.args.batch_size: 5000", "3600 samples", "data_loader.args.drop_last"],
        ),
        (
            ["data_loader.type=Mnist5kDataLoader", "data_loader.args.batch_size=5000",
             "data_loader.args.drop_last=true"],
            ["data_loader.args.batch_size: 5000", "3600 samples", "data_loader.args.drop_last"],
        ),
    ],
)  # fmt: skip
def test_refused_before_the_run_directory(tmp_path: Path, capsys, settings, fragments) -> None:
    save_dir = tmp_path / "saved"
    argv = ["-c", CONFIG, *shrunk(save_dir), *overrides(*settings)]
    assert_refused(train.main, argv, capsys, *fragments)
    assert not (save_dir / "models").exists()


def test_a_resumed_run_is_tried_too(shrunk_run: TrainedRun, tmp_path: Path, capsys) -> None:
    run = shrunk_run.copy_to(tmp_path)
    before = sorted(p.name for p in run.models.iterdir())
    checkpoint = run.models / "checkpoint-epoch1.pth"
    argv = ["-r", str(checkpoint), *overrides("loss=MSELoss")]
    assert_refused(train.main, argv, capsys, "loss: MSELoss failed on the first training batch")
    assert sorted(p.name for p in run.models.iterdir()) == before


# ---------------------------------------------------------------- which part failed


def toy_trainer(model=None, criterion=F.cross_entropy, optimizer=None, metrics=None, data=None):
    """A supervised trainer of a (4 -> 3) linear model on 8 samples, in batches of 4."""
    torch.manual_seed(0)
    model = model or nn.Linear(4, 3)
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.1)
    config = toy_config()
    config["metrics"] = [{"type": name, "args": {}} for name in metrics or {}]
    data = data or (torch.randn(8, 4), torch.randint(3, (8,)))
    return make_trainer(model, criterion, optimizer, config, TensorDataLoader(data, 4),
                        metric_fns=metrics)  # fmt: skip


def broken_metric(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("this metric is broken")


def detached_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output, target).detach()  # nothing to take gradients of


class FailingSGD(torch.optim.SGD):
    def step(self, closure=None):
        raise RuntimeError("this optimizer is broken")


class EvalOnlyFailure(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            raise RuntimeError("fails in eval mode")
        return super().forward(x)


def refusal(trainer: BaseTrainer) -> str:
    with pytest.raises(UserError) as error:
        trainer.trial_step()
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_failing_metric_is_named_by_its_index() -> None:
    trainer = toy_trainer(metrics={"accuracy": lambda o, t: o.sum(), "broken": broken_metric})
    message = refusal(trainer)
    assert message.startswith("metrics[1]: broken failed on the first training batch")
    assert "(4, 4) float32, (4,) int64" in message
    assert "RuntimeError: this metric is broken" in message


def test_a_classification_metric_on_a_regression_is_named_not_logged_as_zero() -> None:
    """Against float targets no class index is ever equal: accuracy would log 0.0 every
    epoch without a word."""
    data = (torch.randn(8, 4), torch.randn(8, 1))
    trainer = toy_trainer(nn.Linear(4, 1), F.mse_loss, metrics={"accuracy": accuracy}, data=data)
    message = refusal(trainer)
    assert message.startswith("metrics[0]: accuracy failed on the first training batch")
    assert (
        "ValueError: targets of dtype float32 are not class indices: this is a "
        "classification metric; a regression takes another, such as MeanAbsoluteError" in message
    )
    for metric in (accuracy, top_k_acc):  # class indices pass
        assert 0 <= metric(torch.randn(8, 3), torch.randint(3, (8,))).item() <= 1


def test_a_failing_optimizer_step_is_named() -> None:
    model = nn.Linear(4, 3)
    message = refusal(toy_trainer(model, optimizer=FailingSGD(model.parameters(), lr=0.1)))
    assert message.startswith("optimizer: FailingSGD.step failed")


def test_a_failing_backward_is_put_on_the_loss() -> None:
    message = refusal(toy_trainer(criterion=detached_loss))
    assert message.startswith("loss: the backward pass failed")
    assert "does not require grad" in message


def test_the_validation_step_is_tried_too() -> None:
    message = refusal(toy_trainer(EvalOnlyFailure(4, 3)))
    assert message.startswith("arch: EvalOnlyFailure.forward failed on the first validation batch")


def test_a_failure_of_no_known_part_names_the_likely_ones() -> None:
    trainer = toy_trainer(data=(torch.randn(8, 4), torch.randint(3, (8,)), torch.zeros(8)))
    message = refusal(trainer)  # Trainer.train_step unpacks (input, target) from 3 tensors
    assert message.startswith("the first training step failed ((4, 4) float32, (4,) int64, (4,)")
    assert "ValueError: too many values to unpack" in message
    assert "arch, loss or metrics" in message


def test_an_empty_loader_is_refused_by_any_trainer() -> None:
    loader = TensorDataLoader((torch.randn(3, 4), torch.zeros(3)), 4, drop_last=True)
    with pytest.raises(UserError, match=r"batch_size: 4 is more than the 3 samples .* drop_last"):
        EpochBatches(loader, batches_per_epoch=5)


def test_an_empty_share_under_torchrun_names_the_share(monkeypatch) -> None:
    for module in (utils.distributed.process_group, base.epoch_batches):
        monkeypatch.setattr(module, "world_size", lambda: 4)
    monkeypatch.setattr(utils.distributed.process_group, "rank", lambda: 3)
    loader = TensorDataLoader((torch.randn(10, 4), torch.zeros(10)), 4, drop_last=True)
    with pytest.raises(UserError, match=r"the 3 samples each of 4 processes gets \(of 10\)"):
        EpochBatches(loader)


def test_a_loader_that_breaks_its_promise_of_batches_is_refused_mid_run() -> None:
    class Hollow(TensorDataLoader):
        def __iter__(self):  # `len` says 2 batches; none come
            return iter(())

    batches = EpochBatches(Hollow((torch.randn(8, 4), torch.zeros(8)), 4), batches_per_epoch=3)
    with pytest.raises(UserError, match="data_loader: the data loader gives no batch"):
        next(batches.remaining(1))


# ---------------------------------------------------------------- the trial leaves no trace


def built(config: str, *settings: str) -> BaseTrainer:
    """A trainer of a shipped config, shrunk to batches of 32 on the CPU."""
    raw = apply_overrides(load_config_file(config), [
        f"data_loader.args.data_dir={ROOT / 'data'}", "data_loader.args.batch_size=32",
        "trainer.tensorboard=false", *settings,
    ])  # fmt: skip
    return build_trainer(resolve_config(raw, trainer_keys), torch.device("cpu"))


def everything(trainer: BaseTrainer) -> dict:
    """A copy of all the trial could change: the checkpoint (weights, buffers, optimizers,
    schedulers, scaler, counters, position, hooks, random generators) and what it omits."""
    return copy.deepcopy({
        "checkpoint": trainer.state_dict(),
        "grads": [p.grad for m in trainer.bare_models.values() for p in m.parameters()],
        "modes": [m.training for model in trainer.models.values() for m in model.modules()],
        "updates": {k: v for k, v in vars(trainer.updates).items() if k != "scaler"},
        "batch": trainer.batch,
        "loader": {"epoch": trainer.batches.data_loader.sampler.epoch,
                   "start": trainer.batches.data_loader.sampler.start},
    })  # fmt: skip


@pytest.mark.parametrize(
    ("config", "settings"),
    [
        (CONFIG, []),
        (CONFIG, ["trainer.amp=fp16", "trainer.accumulate_steps=2", "trainer.clip_grad_norm=1.0",
                  "lr_scheduler={type: OneCycleLR, args: {max_lr: 0.01}}"]),
    ],
)  # fmt: skip
def test_the_trial_trains_one_step_and_undoes_it(config: str, settings: list[str]) -> None:
    assert_trial_undone(config, settings)


def assert_trial_undone(config: str, settings: list[str]) -> None:
    """The trial step trains (the weights and BatchNorm statistics move), and afterwards
    everything it could change is as before."""
    trainer = built(config, *settings)
    trainer.updates.measure_grad_norms = True  # as at a log step: the trial must not change it
    before = everything(trainer)
    weights = copy.deepcopy({n: m.state_dict() for n, m in trainer.bare_models.items()})
    trained = []
    trainer.own_steps = 0  # a subclass's own counter, as a warm-up of its own would keep

    def train_step(batch):
        trainer.own_steps += 1
        values = type(trainer).train_step(trainer, batch)
        trained.append({n: copy.deepcopy(m.state_dict()) for n, m in trainer.bare_models.items()})
        return values

    trainer.train_step = train_step
    trainer.trial_step()
    del trainer.train_step
    assert len(trained) == 1 and trainer.own_steps == 0
    with pytest.raises(AssertionError):  # the step did train: weights and BatchNorm stats moved
        assert_same_state(weights, trained[0])
    assert_same_run(everything(trainer), before)


def test_a_resumed_trainer_is_put_back_exactly(shrunk_run: TrainedRun) -> None:
    checkpoint = load(shrunk_run.models / "checkpoint-epoch1.pth")
    trainer = built(CONFIG, "trainer.len_epoch=3", "trainer.epochs=2")
    trainer.load_state_dict(checkpoint)
    before = everything(trainer)
    trainer.trial_step()
    assert_same_run(everything(trainer), before)
    assert before["checkpoint"]["optimizer"]["state"]  # Adam's moments, from the checkpoint


# ---------------------------------------------------------------- the same run without it


@pytest.fixture
def in_process_logging():
    """train.main sets up the root logger; put pytest's handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def train_in_process(argv: list[str]) -> None:
    assert train.main(argv) == 0


@pytest.mark.slow
@pytest.mark.usefixtures("in_process_logging")
def test_runs_with_and_without_the_trial_are_identical(tmp_path: Path, monkeypatch) -> None:
    """Two epochs through train.main end bit for bit where they end without the trial (a
    resumed run's state is checked by test_a_resumed_trainer_is_put_back_exactly)."""
    calls = []
    original = BaseTrainer.trial_step
    monkeypatch.setattr(BaseTrainer, "trial_step", lambda self: calls.append(original(self)))
    smaller = ["-o", "trainer.tensorboard=false", "-o", "data_loader.args.validation_split=64"]
    checkpoints = []
    for tried in (True, False):
        if not tried:
            monkeypatch.setattr(BaseTrainer, "trial_step", lambda self: None)
        save_dir = tmp_path / f"tried_{tried}"
        assert train.main(["-c", CONFIG, *shrunk(save_dir), *smaller]) == 0
        checkpoints.append(load(run_dir(save_dir) / "checkpoint-epoch2.pth"))
    assert len(calls) == 1
    assert_same_run(*checkpoints)
