"""TensorBoard: parameter histograms binned on the device match the parameters; the logger's
training windows, epoch throughput, config text and gradient norms."""

import json
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import load, make_trainer, toy_config
from google.protobuf.json_format import MessageToDict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata
from torch import nn

from base import BaseTrainer, Hook, TensorDataLoader
from logger.tensorboard import TensorboardWriter, hyperparameters
from trainer import Trainer
from utils.errors import TrainingFailed
from utils.run.dirs import RunDirs, create_run_dirs
from utils.stop_signals import Stopped


def test_parameter_histograms_describe_each_parameter(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 20), nn.Linear(20, 3))
    writer = TensorboardWriter(tmp_path, enabled=True)
    writer.histograms(model, step=7, bins=8)
    writer.close()
    events = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0}).Reload()
    assert set(events.Tags()["histograms"]) == {
        f"parameters/{n}" for n, _ in model.named_parameters()
    }
    for name, parameter in model.named_parameters():
        (event,) = events.Histograms(f"parameters/{name}")
        histogram = event.histogram_value
        values = parameter.detach().double()
        assert event.step == 7
        assert histogram.num == values.numel() == sum(histogram.bucket)
        assert histogram.min == pytest.approx(values.min().item())
        assert histogram.max == pytest.approx(values.max().item())
        assert histogram.sum == pytest.approx(values.sum().item(), abs=1e-5)
        assert histogram.sum_squares == pytest.approx((values**2).sum().item())
        edges = torch.tensor(histogram.bucket_limit, dtype=torch.float64)
        bins = zip([-torch.inf, *edges[:-1]], edges, strict=True)
        expected = [((values > lo) & (values <= hi)).sum().item() for lo, hi in bins]
        # Values exactly on an edge may fall either side of it in float32 binning.
        assert sum(abs(a - b) for a, b in zip(histogram.bucket, expected, strict=True)) <= 2


# ---------------------------------------------------------------- what the TensorBoardLogger writes

STEPS_PER_EPOCH, LOG_STEP = 7, 3


def toy_parts() -> tuple[nn.Module, torch.optim.Optimizer, TensorDataLoader]:
    """A linear model and its optimizer, and 7 unshuffled batches of 4: the same each time."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(4 * STEPS_PER_EPOCH, 5, generator=generator)
    target = torch.randint(3, (4 * STEPS_PER_EPOCH,), generator=generator)
    model = nn.Linear(5, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, optimizer, TensorDataLoader((features, target), 4, shuffle=False)


def toy_run(tmp_path: Path, name: str, **options) -> tuple[Trainer, RunDirs]:
    """Two epochs of `toy_parts` (no validation), logging every 3 steps, TensorBoard on."""
    model, optimizer, loader = toy_parts()
    config = toy_config(epochs=2, log_step=LOG_STEP, tensorboard=True, **options)
    trainer = make_trainer(model, F.cross_entropy, optimizer, config, loader)
    return trainer, create_run_dirs(tmp_path, name, "run")


def read_events(run: RunDirs) -> EventAccumulator:
    return EventAccumulator(str(run.log), size_guidance={"scalars": 0, "tensors": 0}).Reload()


def scalars(events: EventAccumulator, tag: str) -> dict[int, float]:
    return {event.step: event.value for event in events.Scalars(tag)}


def test_windows_restart_each_epoch_and_its_last_partial_window_is_logged(tmp_path) -> None:
    """Every 3rd step of each 7-step epoch and its last: no step is left out of `train/*`, and
    the windows of an epoch make up its mean."""
    trainer, run = toy_run(tmp_path, "toy")
    trainer.train(run)
    events = read_events(run)
    losses = scalars(events, "train/loss")
    assert list(losses) == [3, 6, 7, 10, 13, 14]
    window_steps = {3: 3, 6: 3, 7: 1, 10: 3, 13: 3, 14: 1}  # by the step that ends the window
    for end, epoch_loss in scalars(events, "epoch/loss").items():
        windows = [step for step in window_steps if end - STEPS_PER_EPOCH < step <= end]
        mean = sum(losses[step] * window_steps[step] for step in windows) / STEPS_PER_EPOCH
        assert mean == pytest.approx(epoch_loss, rel=1e-6)


def test_a_run_resumed_mid_window_logs_the_windows_of_an_uninterrupted_one(tmp_path) -> None:
    """Saved at step 5 (in the window of steps 4-6) and resumed, the run logs the same
    windows with the same values; its first epoch's throughput counts only what it trained."""
    uninterrupted, run = toy_run(tmp_path, "uninterrupted", save_every_steps=5)
    uninterrupted.train(run)
    resumed, resumed_run = toy_run(tmp_path, "resumed")
    resumed.load_state_dict(load(run.models / "checkpoint-step5.pth"))
    resumed.train(resumed_run)
    expected, events = read_events(run), read_events(resumed_run)
    assert scalars(events, "train/loss") == {
        step: loss for step, loss in scalars(expected, "train/loss").items() if step > 5
    }
    seconds = scalars(events, "epoch/train_seconds")[STEPS_PER_EPOCH]
    throughput = scalars(events, "epoch/samples_per_second")[STEPS_PER_EPOCH]
    assert throughput * seconds == pytest.approx(2 * 4, rel=1e-5)  # steps 6 and 7


def test_epoch_time_and_samples_per_second(tmp_path: Path) -> None:
    trainer, run = toy_run(tmp_path, "toy")
    trainer.train(run)
    events = read_events(run)
    seconds = scalars(events, "epoch/train_seconds")
    throughput = scalars(events, "epoch/samples_per_second")
    assert list(seconds) == list(throughput) == [7, 14]
    for step in (7, 14):
        assert seconds[step] > 0 and throughput[step] > 0
        assert throughput[step] * seconds[step] == pytest.approx(4 * STEPS_PER_EPOCH, rel=1e-5)


def test_the_resolved_config_is_logged_as_text(tmp_path: Path) -> None:
    trainer, run = toy_run(tmp_path, "toy")
    trainer.train(run)
    (event,) = read_events(run).Tensors("config/text_summary")
    text = event.tensor_proto.string_val[0].decode()
    assert text.startswith("```json\n") and text.endswith("\n```")
    assert json.loads(text.removeprefix("```json\n").removesuffix("\n```")) == trainer.config


def reference_grad_norms(clip: float | None) -> list[float]:
    """The gradient norm before clipping at each step of `toy_run`'s first epoch, by hand."""
    model, optimizer, loader = toy_parts()
    loader.set_epoch(1)
    norms = []
    for features, target in loader:
        F.cross_entropy(model(features), target).backward()
        grads = [p.grad for p in model.parameters()]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        norms.append(norm.item())
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad()
    return norms


class MeasuredSteps(Hook):
    """Records the steps at which the gradient norms were measured."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def after_step(self, trainer: BaseTrainer) -> None:
        if trainer.updates.grad_norms:
            self.steps.append(trainer.step)


@pytest.mark.parametrize("clip", [1e-6, None])
def test_the_gradient_norm_before_clipping_is_logged_at_log_steps(tmp_path, clip) -> None:
    trainer, run = toy_run(tmp_path, "toy", clip_grad_norm=clip)
    measured = MeasuredSteps()
    trainer.hooks.append(measured)
    trainer.train(run)
    norms = scalars(read_events(run), "train/grad_norm")
    assert list(norms) == measured.steps == [3, 6, 7, 10, 13, 14]  # only where logged
    expected = reference_grad_norms(clip)
    for step in (3, 6, 7):
        assert norms[step] == pytest.approx(expected[step - 1], rel=1e-5)
        assert norms[step] > 1000 * (clip or 0)  # unclipped


# ---------------------------------------------------------------- hparams at the end of a run


def hparams_record(run: RunDirs) -> tuple[dict, list[str]] | None:
    """The config values of the run's HParams row and its metric tags (None when there is
    no row), as TensorBoard's HParams plugin reads them from the run's directory."""
    events = read_events(run)
    try:
        content = events.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    except KeyError:  # no summary of the hparams plugin in the run
        return None
    start = hparams_metadata.parse_session_start_info_plugin_data(
        content[hparams_metadata.SESSION_START_INFO_TAG]
    )
    values = {name: MessageToDict(value) for name, value in start.hparams.items()}
    experiment = hparams_metadata.parse_experiment_plugin_data(
        content[hparams_metadata.EXPERIMENT_TAG]
    )
    return values, [metric.name.tag for metric in experiment.metric_infos]


def test_the_end_of_a_run_writes_its_hparams_row_in_its_own_directory(tmp_path) -> None:
    trainer, run = toy_run(tmp_path, "toy", monitor="min loss")
    trainer.train(run)
    values, metric_tags = hparams_record(run)
    assert values["trainer.log_step"] == LOG_STEP and values["optimizer.type"] == "SGD"
    assert values["trainer.monitor"] == "min loss" and values["trainer.amp"] == "false"
    assert not {"trainer.save_dir", "trainer.verbosity"} & values.keys()
    assert not any(name.startswith("code_version") for name in values)
    assert metric_tags == ["epoch/loss", "hparams/best_loss"]
    events = read_events(run)
    assert set(metric_tags) <= set(events.Tags()["scalars"])
    assert scalars(events, "hparams/best_loss") == {14: pytest.approx(trainer.monitor.best)}
    assert not [path for path in run.log.iterdir() if path.is_dir()]  # no sub-run


def test_a_resumed_run_ends_as_one_row_with_its_final_values(tmp_path: Path) -> None:
    first, run = toy_run(tmp_path, "toy", monitor="min loss", save_every_steps=5)
    first.train(run)
    model, optimizer, loader = toy_parts()
    config = toy_config(epochs=3, log_step=LOG_STEP, tensorboard=True, monitor="min loss")
    resumed = make_trainer(model, F.cross_entropy, optimizer, config, loader)
    resumed.load_state_dict(load(run.models / "checkpoint-step5.pth"))
    resumed.train(run)
    _, metric_tags = hparams_record(run)
    events = read_events(run)
    assert not [path for path in run.log.iterdir() if path.is_dir()]
    assert scalars(events, "hparams/best_loss") == {21: pytest.approx(resumed.monitor.best)}
    assert list(scalars(events, "epoch/loss")) == [7, 14, 21]  # the first end's values hidden
    assert set(metric_tags) <= set(events.Tags()["scalars"])


class EndAfterFirstEpoch(Hook):
    def __init__(self, reason: BaseException | None) -> None:
        self.reason = reason

    def after_epoch(self, trainer: BaseTrainer) -> None:
        trainer.request_stop(self.reason)


@pytest.mark.parametrize(
    ("reason", "written"),
    [(None, True), (Stopped(signal.SIGTERM), False), (TrainingFailed("failed"), False)],
)
def test_hparams_are_written_after_early_stopping_not_after_a_signal_or_error(
    tmp_path: Path, reason: BaseException | None, written: bool
) -> None:
    trainer, run = toy_run(tmp_path, "toy")
    trainer.hooks.insert(0, EndAfterFirstEpoch(reason))
    if reason is None:
        trainer.train(run)
    else:
        with pytest.raises(type(reason)):
            trainer.train(run)
    assert (hparams_record(run) is not None) == written
    assert list(scalars(read_events(run), "epoch/loss")) == [STEPS_PER_EPOCH]


def test_hyperparameters_are_the_values_that_shape_training() -> None:
    config = {"optimizer": {"args": {"lr": 0.01, "betas": [0.9, 0.99]}}, "seed": None,
              "trainer": {"amp": False, "save_dir": "s/"}}  # fmt: skip
    assert hyperparameters(config) == {
        "optimizer.args.lr": 0.01, "optimizer.args.betas": "[0.9, 0.99]", "trainer.amp": "false"
    }  # fmt: skip
