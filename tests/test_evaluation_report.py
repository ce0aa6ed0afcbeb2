"""test.py's classification report: the per-class math, the choice of the worst mistakes, the
recorder on toy trainers (tabular, regression, EMA), and test.py on the shrunk MNIST run."""

import importlib.util
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, TrainedRun, make_trainer, read_json, toy_config
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from base import TensorDataLoader
from logger.evaluation_report import write_pictures
from model.metric import accuracy
from trainer.hooks.ema import EMA
from utils.classification_metrics import ClassificationReport, count_confusion
from utils.cli import run_main
from utils.errors import UserError
from utils.prediction_recorder import PredictionRecorder
from utils.worst_predictions import WorstPredictions

# test.py by its path: `import test` could find the standard library's test package.
_spec = importlib.util.spec_from_file_location("test_script", ROOT / "test.py")
test_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(test_script)

# ---------------------------------------------------------------- the per-class math

# Four classes; class 2 is never predicted, class 3 has no samples (but is predicted once).
TARGET = [0, 0, 0, 1, 1, 2, 2, 2]
PREDICTED = [0, 0, 1, 1, 3, 0, 1, 1]


def test_confusion_counts_batches_and_leaves_out_targets_outside_the_classes() -> None:
    confusion = torch.zeros(4, 4, dtype=torch.long)
    outside = count_confusion(confusion, torch.tensor([*TARGET[:5], 4]),
                              torch.tensor([*PREDICTED[:5], 0]))  # fmt: skip
    outside += count_confusion(confusion, torch.tensor([*TARGET[5:], -1]),
                               torch.tensor([*PREDICTED[5:], 2]))  # fmt: skip
    expected = [[0] * 4 for _ in range(4)]
    for true, predicted in zip(TARGET, PREDICTED, strict=True):
        expected[true][predicted] += 1
    assert confusion.tolist() == expected
    assert outside.item() == 2


def test_per_class_values_match_the_hand_counts() -> None:
    confusion = torch.zeros(4, 4, dtype=torch.long)
    count_confusion(confusion, torch.tensor(TARGET), torch.tensor(PREDICTED))
    report = ClassificationReport(confusion, ["zero", "one", "two", "three"])
    rows = {row["name"]: row for row in report.per_class()}
    approx = pytest.approx
    # class 0: called 0 three times, two right; one of its three samples called 1; TN 4 of 8
    assert rows["zero"] == {"index": 0, "name": "zero", "precision": approx(2 / 3),
                            "recall": approx(2 / 3), "f1": approx(2 / 3),
                            "accuracy": approx(6 / 8), "support": 3}  # fmt: skip
    # class 1: called 1 four times, one right; one of its two samples right; TN 3
    assert rows["one"] == {"index": 1, "name": "one", "precision": approx(1 / 4),
                           "recall": approx(1 / 2), "f1": approx(1 / 3),
                           "accuracy": approx(4 / 8), "support": 2}  # fmt: skip
    # class 2: never predicted: precision 0, none of its three right; TN 5
    assert rows["two"] == {"index": 2, "name": "two", "precision": 0.0, "recall": 0.0,
                           "f1": 0.0, "accuracy": approx(5 / 8), "support": 3}  # fmt: skip
    # class 3: no samples, so no recall or F1; its one prediction is wrong; TN 7
    assert rows["three"] == {"index": 3, "name": "three", "precision": 0.0, "recall": None,
                             "f1": None, "accuracy": approx(7 / 8), "support": 0}  # fmt: skip
    # Macro averages: over classes 0, 1 and 2, which have samples.
    assert report.macro_average() == {
        "precision": approx((2 / 3 + 1 / 4 + 0) / 3),
        "recall": approx((2 / 3 + 1 / 2 + 0) / 3),
        "f1": approx((2 / 3 + 1 / 3 + 0) / 3),
        "accuracy": approx((6 / 8 + 4 / 8 + 5 / 8) / 3),
        "support": 8,
    }


# ---------------------------------------------------------------- the worst mistakes


def test_the_most_confident_mistakes_are_kept_across_batches() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 5, generator=generator)  # (50, 5)
    target = torch.randint(5, (50,), generator=generator)
    confidence, predicted = logits.softmax(1).max(1)
    sample = torch.arange(50)  # each sample's input is its own index
    worst = WorstPredictions(7)
    for start, stop in [(0, 3), (3, 20), (20, 21), (21, 50)]:  # uneven batches
        worst.update(sample[start:stop], target[start:stop], predicted[start:stop],
                     confidence[start:stop])  # fmt: skip
    mistakes = worst.result()
    wrong = [i for i in range(50) if predicted[i] != target[i]]
    expected = sorted(wrong, key=lambda i: -confidence[i].item())[:7]
    assert mistakes.inputs.tolist() == expected
    assert mistakes.target.tolist() == target[expected].tolist()
    assert mistakes.predicted.tolist() == predicted[expected].tolist()
    assert mistakes.confidence.tolist() == confidence[expected].tolist()


def test_fewer_mistakes_than_asked_keeps_only_mistakes_earliest_first_on_ties() -> None:
    worst = WorstPredictions(10)
    # samples 0 and 2 are wrong with the same confidence; 1 and 3 are right (and surer)
    worst.update(torch.tensor([0, 1]), torch.tensor([1, 1]), torch.tensor([0, 1]),
                 torch.tensor([0.6, 0.9]))  # fmt: skip
    worst.update(torch.tensor([2, 3]), torch.tensor([0, 2]), torch.tensor([1, 2]),
                 torch.tensor([0.6, 0.99]))  # fmt: skip
    assert worst.result().inputs.tolist() == [0, 2]
    one = WorstPredictions(1)
    one.update(torch.tensor([0, 1]), torch.tensor([1, 1]), torch.tensor([0, 0]),
               torch.tensor([0.6, 0.6]))  # fmt: skip
    one.update(torch.tensor([2]), torch.tensor([1]), torch.tensor([0]), torch.tensor([0.6]))
    assert one.result().inputs.tolist() == [0]


# ---------------------------------------------------------------- the recorder on toy trainers


def toy_trainer(model: nn.Module, criterion, target: torch.Tensor, **options):
    """A trainer of `model` and a loader of 40 rows of 5 features with `target`, batches of 8."""
    features = torch.randn(len(target), 5, generator=torch.Generator().manual_seed(1))
    loader = TensorDataLoader((features, target), 8, shuffle=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = make_trainer(model, criterion, optimizer, toy_config(**options), loader,
                           metric_fns={"accuracy": accuracy})  # fmt: skip
    return trainer, loader, features


def predicted_confusion(model: nn.Module, features: torch.Tensor, target: torch.Tensor) -> list:
    """The confusion counts of `model` on `features`, counted without the recorder."""
    with torch.no_grad():
        predicted = model(features).argmax(1).tolist()
    n_classes = model.out_features
    counts = [[0] * n_classes for _ in range(n_classes)]
    for true, chosen in zip(target.tolist(), predicted, strict=True):
        counts[true][chosen] += 1
    return counts


def test_a_tabular_classifier_gets_the_confusion_matrix_but_no_grid(tmp_path, caplog) -> None:
    torch.manual_seed(0)
    target = torch.randint(3, (40,), generator=torch.Generator().manual_seed(2))
    trainer, loader, features = toy_trainer(nn.Linear(5, 3), F.cross_entropy, target)
    recorder = PredictionRecorder(trainer.models["model"], n_worst=4)
    with caplog.at_level(logging.INFO):
        results = trainer.validate(recorder.watch(loader))
        report = recorder.report(None)
        mistakes = recorder.mistakes()
        write_pictures(report, mistakes, tmp_path / "model.pth", None, step=0)
    assert report.confusion.tolist() == predicted_confusion(trainer.model, features, target)
    assert report.confusion.trace().item() == pytest.approx(results["accuracy"] * 40)
    assert report.class_names == ["0", "1", "2"]
    assert mistakes is None
    assert "no grid of misclassified examples: the inputs are not image batches" in caplog.text
    with Image.open(tmp_path / "model.confusion_matrix.png") as picture:
        assert picture.width > 100 and picture.height > 100
    assert not (tmp_path / "model.misclassified.png").exists()


def test_a_regression_model_skips_the_report(caplog) -> None:
    target = torch.randn(40)  # float targets: not class indices
    trainer, loader, _ = toy_trainer(nn.Linear(5, 1), lambda out, y: F.mse_loss(out[:, 0], y),
                                     target)  # fmt: skip
    trainer.metric_fns = {}
    recorder = PredictionRecorder(trainer.models["model"], n_worst=4)
    with caplog.at_level(logging.INFO):
        results = trainer.validate(recorder.watch(loader))
        assert recorder.report(None) is None
    assert set(results) == {"loss"}  # the metrics as ever
    assert "no classification report: the targets are not class indices" in caplog.text
    assert recorder.mistakes() is None
    assert not trainer.model._forward_hooks  # the recorder's hook is gone


def test_no_model_a_model_not_run_or_no_grid_wanted_is_said(caplog) -> None:
    batches = [(torch.ones(3, 1, 4, 4), torch.zeros(3, dtype=torch.long))]  # images, classes
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with caplog.at_level(logging.INFO):
        assert PredictionRecorder(None, 4).report(None) is None
        not_run = PredictionRecorder(model, 4)
        list(not_run.watch(batches))
        assert not_run.report(None) is None
        no_grid = PredictionRecorder(model, 0)
        for inputs, _ in no_grid.watch(batches):
            model(inputs)
        assert no_grid.report(None).confusion.sum() == 3
        assert no_grid.mistakes() is None
    assert "no classification report: the trainer has no `model`" in caplog.text
    assert "no classification report: the model ran 0 times on one batch" in caplog.text
    assert "no grid of misclassified examples: none asked for (--worst 0)" in caplog.text
    with pytest.raises(UserError, match="--worst"):
        test_script.parse_args(["-r", "x.pth", "--worst", "-1"])


def test_the_report_sees_the_weights_the_ema_hook_evaluates() -> None:
    torch.manual_seed(0)
    target = torch.randint(3, (40,), generator=torch.Generator().manual_seed(2))
    hooks = [{"type": "EMA", "args": {"decay": 0.5}}]
    trainer, loader, features = toy_trainer(nn.Linear(5, 3), F.cross_entropy, target,
                                            hooks=hooks)  # fmt: skip
    (ema,) = [hook for hook in trainer.hooks if isinstance(hook, EMA)]
    averaged = nn.Linear(5, 3)  # other weights, as a checkpoint's averaged ones
    ema.load_state_dict({"weights": averaged.state_dict(), "updates": 1})
    recorder = PredictionRecorder(trainer.models["model"], n_worst=4)
    results = trainer.validate(recorder.watch(loader))
    confusion = recorder.report(None).confusion
    assert confusion.tolist() == predicted_confusion(averaged, features, target)
    assert confusion.tolist() != predicted_confusion(trainer.model, features, target)
    assert confusion.trace().item() == pytest.approx(results["accuracy"] * 40)


# ---------------------------------------------------------------- test.py on the MNIST run


def test_test_py_writes_the_report_pictures_and_tensorboard_images(
    tmp_path: Path, shrunk_run: TrainedRun, capsys
) -> None:
    run = shrunk_run.copy_to(tmp_path)
    models = run.models
    log = run.save_dir / "log" / "Mnist_LeNet" / models.name
    (run_events,) = log.glob("events.out.tfevents.*")
    before = run_events.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda _: test_script.main(["-r", str(models), "--worst", "16"]))
    stdout = capsys.readouterr().out
    assert exit_info.value.code == 0
    metrics = read_json(models / "model_best.test_metrics.json")
    assert [row["name"] for row in metrics["per_class"]] == [str(k) for k in range(10)]
    assert [row["support"] for row in metrics["per_class"]] == [100] * 10
    confusion = torch.tensor(metrics["confusion_matrix"])
    assert confusion.sum() == metrics["n_samples"] == 1000
    assert confusion.trace().item() == pytest.approx(metrics["accuracy"] * 1000)
    assert metrics["macro_average"]["recall"] == pytest.approx(metrics["accuracy"])  # 100 each
    assert "macro average" in stdout
    sizes = {}
    for name in ("confusion_matrix", "misclassified"):
        with Image.open(models / f"model_best.{name}.png") as picture:
            assert picture.format == "PNG" and picture.width >= 300 and picture.height >= 300
            sizes[f"test/{name}"] = picture.size
    events = EventAccumulator(str(log / "test"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert set(events.Tags()["images"]) == set(sizes)
    for tag, size in sizes.items():
        (image,) = events.Images(tag)
        assert image.step == metrics["step"] == 6 and (image.width, image.height) == size
    assert "test/per_class/text_summary" in events.Tags()["tensors"]
    assert run_events.read_bytes() == before  # the run's own events untouched
    assert list(log.glob("events.out.tfevents.*")) == [run_events]


def test_class_names_come_from_the_loader_else_its_dataset() -> None:
    features, labels = torch.randn(8, 3), torch.arange(8) % 2
    loader = TensorDataLoader((features, labels), batch_size=4, shuffle=False)
    assert test_script.class_names(loader) is None  # a loader of tensors has none of its own
    loader.classes = ("cat", "dog")  # what a user sets on such a loader
    assert test_script.class_names(loader) == ["cat", "dog"]
    dataset = torch.utils.data.TensorDataset(features, labels)
    dataset.classes = ["even", "odd"]  # as torchvision's data sets have them
    assert test_script.class_names(torch.utils.data.DataLoader(dataset)) == ["even", "odd"]
