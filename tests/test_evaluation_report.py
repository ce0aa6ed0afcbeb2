"""test.py's evaluation report: the classification values (torchmetrics), the choice of the
worst samples, each kind of report on toy models (classification, regression,
reconstruction), how the kind is chosen, and test.py on the shrunk MNIST run."""

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, TrainedRun, load, make_trainer, read_json, run_dir, toy_config
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_cli_errors import assert_refused, run_in_process
from torch import nn
from torchmetrics.functional import mean_absolute_error, mean_squared_error, r2_score
from torchmetrics.functional.classification import multiclass_f1_score

import train
from base import TensorDataLoader
from builder import reports_to_try
from logger.reports.classification import ClassificationReport, class_names
from logger.reports.kinds import AUTO, report_kinds
from logger.reports.output import write_report
from logger.reports.pictures import MARK, TILE, histogram_picture
from logger.reports.reconstruction import side_by_side
from logger.reports.recorder import ReportRecorder
from logger.reports.report import NotReportable, WorstSamples
from model.loss import multilabel_bce
from model.metric import accuracy
from trainer import Trainer
from trainer.hooks.ema import EMA
from utils.cli import run_main
from utils.errors import UserError

# test.py by its path: `import test` could find the standard library's test package.
_spec = importlib.util.spec_from_file_location("test_script", ROOT / "test.py")
test_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(test_script)

# ---------------------------------------------------------------- the classification values

# Five classes; class 2 is never predicted, class 3 has no samples (but is predicted once),
# class 4 neither occurs nor is predicted.
TARGET = [0, 0, 0, 1, 1, 2, 2, 2]
PREDICTED = [0, 0, 1, 1, 3, 0, 1, 1]


def classification_of(target: list[int], predicted: list[int], n_classes: int = 5):
    """The classification report of scores that predict `predicted`, in two batches."""
    report = ClassificationReport(None, n_worst=0)
    scores = F.one_hot(torch.tensor(predicted), n_classes).float()  # (B, C)
    for part in (slice(0, 5), slice(5, None)):
        inputs, output, labels = torch.zeros(len(scores[part]), 2), scores[part], torch.tensor(
            target[part])  # fmt: skip
        assert report.misfit(inputs, output, labels) is None
        report.update(inputs, output, labels)
    return report.finish("toy")


def test_per_class_values_match_the_hand_counts_and_macro_is_torchmetrics() -> None:
    result = classification_of(TARGET, PREDICTED)
    rows = {row["index"]: row for row in result.summary["per_class"]}
    approx = pytest.approx
    # class 0: called 0 three times, two right; one of its three samples called 1
    assert rows[0] == {"index": 0, "name": "0", "precision": approx(2 / 3),
                       "recall": approx(2 / 3), "f1": approx(2 / 3), "support": 3}  # fmt: skip
    # class 1: called 1 four times, one right; one of its two samples right
    assert rows[1] == {"index": 1, "name": "1", "precision": approx(1 / 4),
                       "recall": approx(1 / 2), "f1": approx(1 / 3), "support": 2}  # fmt: skip
    # class 2: never predicted: precision 0, none of its three right
    assert rows[2] == {"index": 2, "name": "2", "precision": 0.0, "recall": 0.0, "f1": 0.0,
                       "support": 3}  # fmt: skip
    # classes 3 and 4: no samples, so no recall or F1; class 3's one prediction is wrong
    for k in (3, 4):
        assert rows[k] == {"index": k, "name": str(k), "precision": 0.0, "recall": None,
                           "f1": None, "support": 0}  # fmt: skip
    # Macro: over the classes that occur or are predicted (0 to 3), as torchmetrics (and
    # scikit-learn) average; class 4 is left out.
    assert result.summary["macro_average"] == {
        "precision": approx((2 / 3 + 1 / 4) / 4),
        "recall": approx((2 / 3 + 1 / 2) / 4),
        "f1": approx((2 / 3 + 1 / 3) / 4),
        "support": 8,
    }
    macro_f1 = multiclass_f1_score(torch.tensor(PREDICTED), torch.tensor(TARGET), 5)
    assert result.summary["macro_average"]["f1"] == approx(macro_f1.item())
    expected = [[0] * 5 for _ in range(5)]
    for true, chosen in zip(TARGET, PREDICTED, strict=True):
        expected[true][chosen] += 1
    assert result.summary["confusion_matrix"] == expected
    assert result.rows[0] == ["class", "precision", "recall", "f1", "support"]
    assert result.rows[-1][0] == "macro average" and result.rows[4][2:4] == ["-", "-"]


def test_targets_outside_the_classes_make_no_report() -> None:
    with pytest.raises(NotReportable, match="2 targets are not class indices in"):
        classification_of([*TARGET[:4], 5, *TARGET[5:7], -1], PREDICTED)


# ---------------------------------------------------------------- the worst samples


def test_the_highest_scores_are_kept_across_batches() -> None:
    generator = torch.Generator().manual_seed(0)
    score = torch.randn(50, generator=generator)
    sample = torch.arange(50)  # each sample's row is its own index
    worst = WorstSamples(7)
    for start, stop in [(0, 3), (3, 20), (20, 21), (21, 50)]:  # uneven batches
        worst.update(score[start:stop], sample=sample[start:stop])
    kept = worst.result()
    expected = [i for i in sorted(range(50), key=lambda i: -score[i].item()) if score[i] >= 0][:7]
    assert kept["sample"].tolist() == expected
    assert kept["score"].tolist() == score[expected].tolist()


def test_negative_scores_are_never_shown_and_ties_keep_the_earliest() -> None:
    worst = WorstSamples(10)
    worst.update(torch.tensor([0.6, -1.0]), sample=torch.tensor([0, 1]))
    worst.update(torch.tensor([0.6, float("nan")]), sample=torch.tensor([2, 3]))
    assert worst.result()["sample"].tolist() == [0, 2]
    one = WorstSamples(1)
    one.update(torch.tensor([0.6, 0.6]), sample=torch.tensor([0, 1]))
    one.update(torch.tensor([0.6]), sample=torch.tensor([2]))
    assert one.result()["sample"].tolist() == [0]
    nothing = WorstSamples(3)
    nothing.update(torch.tensor([-1.0]), sample=torch.tensor([0]))
    assert nothing.result() is None


# ---------------------------------------------------------------- each kind on a toy model


def toy_trainer(model: nn.Module, criterion, inputs: torch.Tensor, target: torch.Tensor,
                **options) -> tuple[Trainer, TensorDataLoader]:  # fmt: skip
    """A trainer of `model` and an unshuffled loader of `inputs` and `target`, batches of 8."""
    loader = TensorDataLoader((inputs, target), 8, shuffle=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    classes = target.dim() == 1 and not target.is_floating_point()
    metrics = {"accuracy": accuracy} if classes else {}
    trainer = make_trainer(model, criterion, optimizer, toy_config(**options), loader,
                           metric_fns=metrics)  # fmt: skip
    return trainer, loader


def evaluate(trainer: Trainer, loader, n_worst: int = 4, kind: str = "auto"):
    """test.py's pass: the metrics, and the report `kind` chooses (recorder and result)."""
    config = {"test": {"report": kind}}
    kinds, named = reports_to_try(config, type(trainer))
    recorder = ReportRecorder(trainer.models["model"], [k(loader, n_worst) for k in kinds], named)
    results = trainer.validate(recorder.watch(loader))
    return results, recorder, recorder.finish("toy.pth (step 0)")


def features(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 5, generator=torch.Generator().manual_seed(seed))


def confusion_of(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> list:
    """The confusion counts of `model` on `inputs`, counted without a report."""
    with torch.no_grad():
        predicted = model(inputs).argmax(1)
    n = model.out_features
    return [[((target == t) & (predicted == p)).sum().item() for p in range(n)] for t in range(n)]


def test_a_tabular_classifier_gets_the_confusion_matrix_but_no_grid(tmp_path, caplog) -> None:
    torch.manual_seed(0)
    inputs, target = (
        features(40),
        torch.randint(3, (40,), generator=torch.Generator().manual_seed(2)),
    )
    trainer, loader = toy_trainer(nn.Linear(5, 3), F.cross_entropy, inputs, target)
    with caplog.at_level(logging.INFO):
        results, recorder, result = evaluate(trainer, loader)
        write_report(result, recorder.report.name, tmp_path / "model.pth", None, step=0)
    confusion = torch.tensor(result.summary["confusion_matrix"])
    assert confusion.tolist() == confusion_of(trainer.model, inputs, target)
    assert confusion.trace().item() == pytest.approx(results["accuracy"] * 40)
    assert [row["name"] for row in result.summary["per_class"]] == ["0", "1", "2"]
    assert "no grid of misclassified examples: the inputs are not image batches" in caplog.text
    with Image.open(tmp_path / "model.confusion_matrix.png") as picture:
        assert picture.width > 100 and picture.height > 100
    assert not (tmp_path / "model.misclassified.png").exists()


def mark_pixels(path: Path) -> int:
    """How many pixels of a chart have the colour of its points and bars."""
    with Image.open(path) as picture:
        pixels = np.asarray(picture.convert("RGB"))  # (H, W, 3)
    return int((pixels == np.array(MARK, dtype=np.uint8)).all(2).sum())


@pytest.mark.parametrize("width", [1, 3])  # (B,) or (B, 1) outputs, and three values each
def test_a_regression_model_gets_errors_over_the_whole_split_and_two_charts(
    tmp_path, width
) -> None:
    torch.manual_seed(0)
    inputs = features(44)
    target = (inputs[:, :width] * 2 + 0.3 * torch.randn(44, width)).squeeze(1)  # (44,) or (44, 3)
    model = nn.Sequential(nn.Linear(5, width), nn.Flatten(0) if width == 1 else nn.Identity())
    trainer, loader = toy_trainer(model, F.mse_loss, inputs, target)
    results, recorder, result = evaluate(trainer, loader)
    assert recorder.report.name == "regression"
    with torch.no_grad():
        output = model(inputs)
    assert result.summary["r2"] == pytest.approx(r2_score(output, target).item(), abs=1e-6)
    assert result.summary["mae"] == pytest.approx(mean_absolute_error(output, target).item())
    assert result.summary["rmse"] == pytest.approx(mean_squared_error(output, target).sqrt().item())
    assert result.summary["rmse"] ** 2 == pytest.approx(results["loss"], rel=1e-5)
    assert result.summary["n_values"] == 44 * width
    if width == 1:
        assert "per_output" not in result.summary
    else:  # each output on its own, as torchmetrics computes it for that column alone
        each = result.summary["per_output"]
        for i in range(width):
            column, true = output[:, i], target[:, i]
            assert each["mae"][i] == pytest.approx(mean_absolute_error(column, true).item())
            assert each["rmse"][i] == pytest.approx(mean_squared_error(column, true).sqrt().item())
            assert each["r2"][i] == pytest.approx(r2_score(column, true).item(), abs=1e-6)
        assert [row[0] for row in result.rows[-width:]] == [f"output {i}" for i in range(width)]
    write_report(result, "regression", tmp_path / "model.pth", None, step=0)
    for name in ("predicted_vs_true", "residuals"):
        assert mark_pixels(tmp_path / f"model.{name}.png") > 40  # the dots, the bars


def test_an_image_shaped_regression_pools_r2_and_charts_a_sample_of_the_whole_split() -> None:
    """400 outputs of (1, 8, 8), sample i's targets all i: 25,600 values, more than the
    charts draw. R^2 is that of all values pooled (not a mean over the 64 pixel positions),
    and the values drawn come from the whole split, not from its first batches."""
    torch.manual_seed(0)
    inputs = features(400)
    target = torch.arange(400.0).view(400, 1, 1, 1).expand(400, 1, 8, 8).contiguous()
    model = nn.Sequential(nn.Linear(5, 64), nn.Unflatten(1, (1, 8, 8)))
    trainer, loader = toy_trainer(model, F.mse_loss, inputs, target)
    _, recorder, result = evaluate(trainer, loader)
    with torch.no_grad():
        output = model(inputs)
    pooled = r2_score(output.flatten(), target.flatten()).item()
    assert result.summary["r2"] == pytest.approx(pooled, abs=1e-6)
    assert result.summary["n_values"] == 400 * 64 and "per_output" not in result.summary
    drawn = recorder.report.points[:, 0]  # the targets of the values drawn: their sample
    assert len(drawn) == 20_000 and len(set(drawn.tolist())) == 400  # every sample's values
    assert drawn.mean().item() == pytest.approx(199.5, abs=3)  # (the first 20,000: 156)


def test_a_lone_outlier_beside_thousands_of_residuals_still_gets_a_bar(tmp_path) -> None:
    """Its bar is under a pixel high at the chart's scale: drawn one pixel high, not refused
    by the drawing library (which stopped test.py's regression report)."""
    residuals = torch.cat([0.1 * torch.randn(16_000, generator=torch.Generator().manual_seed(0)),
                           torch.tensor([3.0])])  # fmt: skip
    picture = histogram_picture(residuals, "residuals", "predicted - true")
    picture.save(tmp_path / "residuals.png")
    with Image.open(tmp_path / "residuals.png") as saved:
        pixels = np.asarray(saved.convert("RGB"))  # (H, W, 3)
    marked_columns = np.flatnonzero((pixels == np.array(MARK, dtype=np.uint8)).all(2).any(0))
    assert marked_columns.max() > 0.7 * pixels.shape[1]  # the outlier's bar; the others near 0


def test_side_by_side_puts_each_sample_s_highest_value_between_its_images() -> None:
    images = torch.arange(2 * 2 * 4, dtype=torch.float).view(2, 2, 1, 2, 2)  # (K, N, C, H, W)
    row = side_by_side(images)  # (2, 1, 2, 5)
    assert row.shape == (2, 1, 2, 5)
    assert torch.equal(row[:, :, :, :2], images[:, 0]) and torch.equal(
        row[:, :, :, 3:], images[:, 1]
    )
    assert row[:, 0, :, 2].tolist() == [[7.0, 7.0], [15.0, 15.0]]


def test_an_image_autoencoder_and_a_denoiser_get_their_worst_reconstructions(tmp_path) -> None:
    torch.manual_seed(0)
    images = torch.rand(20, 1, 8, 8)
    model = nn.Conv2d(1, 1, 3, padding=1)
    for target, columns in ((images, 2), (images.flip(3), 3)):  # itself; another image
        trainer, loader = toy_trainer(model, F.mse_loss, images, target)
        _, recorder, result = evaluate(trainer, loader, n_worst=5)
        assert recorder.report.name == "reconstruction"
        with torch.no_grad():
            errors = (model(images) - target).square().flatten(1).mean(1)  # (20,)
        assert result.summary["mse"] == pytest.approx(errors.mean().item(), rel=1e-5)
        assert result.summary["n_samples"] == 20
        worst = recorder.report.worst.result()["score"]  # (5,) the highest errors, first
        assert worst.tolist() == pytest.approx(errors.sort(descending=True).values[:5].tolist())
        (grid,) = result.pictures.values()  # three samples a row, each `columns` images wide
        wide = 8 * columns + columns - 1  # with a column between the images
        assert grid.width == 3 * (wide * (TILE * columns // wide) + 4) + 4
        write_report(result, "reconstruction", tmp_path / f"{columns}.pth", None, step=0)
        assert (tmp_path / f"{columns}.reconstructions.png").is_file()


# ---------------------------------------------------------------- which report is made


def test_auto_tries_each_kind_and_says_why_none_fits(caplog) -> None:
    assert set(AUTO) <= set(report_kinds())
    assert all(report_kinds()[name].name == name for name in AUTO)
    inputs, target = features(16), torch.ones(16, 2, dtype=torch.long)  # (B, 2) class indices?
    trainer, loader = toy_trainer(nn.Linear(5, 3), lambda out, y: out.sum() * 0, inputs, target)
    with caplog.at_level(logging.INFO):
        _, recorder, result = evaluate(trainer, loader)
    assert result is None and recorder.report is None
    line = next(r.message for r in caplog.records if r.message.startswith("no report: "))
    for kind in AUTO:
        assert f"{kind}: " in line
    assert "the targets are not class indices, one per sample" in line


@pytest.mark.parametrize("dtype", [torch.long, torch.float32])
def test_multi_hot_labels_get_no_regression_report(caplog, dtype) -> None:
    """Multi-label tagging (logits (B, 4), targets of 0s and 1s): a regression report's
    errors and R^2 of logits against labels were numbers that meant nothing."""
    inputs = features(16)
    target = torch.randint(0, 2, (16, 4), generator=torch.Generator().manual_seed(0)).to(dtype)
    trainer, loader = toy_trainer(nn.Linear(5, 4), multilabel_bce, inputs, target)
    with caplog.at_level(logging.INFO):
        _, recorder, result = evaluate(trainer, loader)
    assert result is None and recorder.report is None
    assert "regression: the targets are all 0 or 1: labels (multi-label tagging)" in caplog.text


def test_a_named_report_that_does_not_fit_is_an_error_and_none_makes_none(caplog) -> None:
    inputs, target = features(16), torch.randn(16)
    trainer, loader = toy_trainer(nn.Sequential(nn.Linear(5, 1), nn.Flatten(0)), F.mse_loss,
                                  inputs, target)  # fmt: skip
    with pytest.raises(
        UserError,
        match=r"^test.report: the classification report does not fit "
        r"this model: the model's output is not \(batch, classes\) scores",
    ):
        evaluate(trainer, loader, kind="classification")
    assert not trainer.model._forward_hooks  # the recorder's hook is gone
    with caplog.at_level(logging.INFO):
        results, _, result = evaluate(trainer, loader, kind="none")
    assert result is None and set(results) == {"loss"}  # the metrics as ever
    assert "no report: none asked for (test.report: none)" in caplog.text
    with pytest.raises(
        UserError,
        match=r"test.report: 'regresion' is not a report of "
        r"logger/reports/; did you mean 'regression'\?",
    ):
        evaluate(trainer, loader, kind="regresion")


def test_train_py_refuses_a_misspelt_report_before_the_run_directory(tmp_path, capsys) -> None:
    save_dir = tmp_path / "saved"
    argv = ["-c", str(ROOT / "config" / "config.json"), "-o", f"trainer.save_dir={save_dir}",
            "-o", "test.report=regresion"]  # fmt: skip
    assert_refused(train.main, argv, capsys, "test.report", "'regresion'",
                   "did you mean 'regression'")  # fmt: skip
    assert not save_dir.exists()


def test_a_trainer_names_its_own_report_and_test_report_overrides_it() -> None:
    class ReconstructingTrainer(Trainer):
        report = "reconstruction"

    class MisnamingTrainer(Trainer):
        report = "reconstrution"

    auto = {"test": {"report": "auto"}}
    kinds, named = reports_to_try(auto, ReconstructingTrainer)
    assert [k.name for k in kinds] == ["reconstruction"]
    assert named == "ReconstructingTrainer.report"
    kinds, named = reports_to_try({"test": {"report": "regression"}}, ReconstructingTrainer)
    assert [k.name for k in kinds] == ["regression"] and named == "test.report"
    assert reports_to_try(auto, Trainer) == ([report_kinds()[k] for k in AUTO], None)
    with pytest.raises(UserError, match=r"MisnamingTrainer\.report: 'reconstrution' is not a"):
        reports_to_try(auto, MisnamingTrainer)


def test_no_model_a_model_not_run_or_no_grid_wanted_is_said(caplog) -> None:
    batches = [(torch.ones(3, 1, 4, 4), torch.zeros(3, dtype=torch.long))]  # images, classes
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with caplog.at_level(logging.INFO):
        assert ReportRecorder(None, [ClassificationReport(None, 4)]).finish("t") is None
        not_run = ReportRecorder(model, [ClassificationReport(None, 4)])
        list(not_run.watch(batches))
        assert not_run.finish("t") is None
        no_grid = ReportRecorder(model, [ClassificationReport(None, 0)])
        for inputs, _ in no_grid.watch(batches):
            model(inputs)
        result = no_grid.finish("t")
        assert sum(map(sum, result.summary["confusion_matrix"])) == 3
        assert list(result.pictures) == ["confusion_matrix"]
    assert "no report: the trainer has no `model`" in caplog.text
    assert "no report: the model ran 0 times on one batch" in caplog.text
    assert "no grid of misclassified examples: none asked for (--worst 0)" in caplog.text
    with pytest.raises(UserError, match="--worst"):
        test_script.parse_args(["-r", "x.pth", "--worst", "-1"])


def test_the_report_sees_the_weights_the_ema_hook_evaluates() -> None:
    torch.manual_seed(0)
    inputs, target = (
        features(40),
        torch.randint(3, (40,), generator=torch.Generator().manual_seed(2)),
    )
    hooks = [{"type": "EMA", "args": {"decay": 0.5}}]
    trainer, loader = toy_trainer(nn.Linear(5, 3), F.cross_entropy, inputs, target, hooks=hooks)
    (ema,) = [hook for hook in trainer.hooks if isinstance(hook, EMA)]
    averaged = nn.Linear(5, 3)  # other weights, as a checkpoint's averaged ones
    ema.load_state_dict({"weights": averaged.state_dict(), "updates": 1})
    results, _, result = evaluate(trainer, loader)
    confusion = result.summary["confusion_matrix"]
    assert confusion == confusion_of(averaged, inputs, target)
    assert confusion != confusion_of(trainer.model, inputs, target)
    assert sum(confusion[k][k] for k in range(3)) == pytest.approx(results["accuracy"] * 40)


def test_class_names_come_from_the_loader_else_its_dataset() -> None:
    inputs, labels = torch.randn(8, 3), torch.arange(8) % 2
    loader = TensorDataLoader((inputs, labels), batch_size=4, shuffle=False)
    assert class_names(loader) is None  # a loader of tensors has none of its own
    loader.classes = ("cat", "dog")  # what a user sets on such a loader
    assert class_names(loader) == ["cat", "dog"]
    dataset = torch.utils.data.TensorDataset(inputs, labels)
    dataset.classes = ["even", "odd"]  # as torchvision's data sets have them
    assert class_names(torch.utils.data.DataLoader(dataset)) == ["even", "odd"]


# ---------------------------------------------------------------- test.py on trained runs


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
    report = metrics["report"]
    assert report["kind"] == "classification"
    assert [row["name"] for row in report["per_class"]] == [str(k) for k in range(10)]
    assert [row["support"] for row in report["per_class"]] == [100] * 10
    confusion = torch.tensor(report["confusion_matrix"])
    assert confusion.sum() == metrics["n_samples"] == 1000
    assert confusion.trace().item() == pytest.approx(metrics["accuracy"] * 1000)
    assert report["macro_average"]["recall"] == pytest.approx(metrics["accuracy"])  # 100 each
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
    assert "test/classification/text_summary" in events.Tags()["tensors"]
    assert run_events.read_bytes() == before  # the run's own events untouched
    assert list(log.glob("events.out.tfevents.*")) == [run_events]


class ToyRegressionLoader(TensorDataLoader):
    """y = x . w + noise over 3 features: 240 training rows, or a 90-row test split."""

    def __init__(self, batch_size: int, shuffle: bool = True, validation_split: float = 0.0,
                 training: bool = True) -> None:  # fmt: skip
        generator = torch.Generator().manual_seed(0 if training else 1)
        inputs = torch.randn(240 if training else 90, 3, generator=generator)
        noise = 0.5 * torch.randn(len(inputs), generator=generator)
        target = inputs @ torch.tensor([1.0, -2.0, 0.5]) + noise  # (N,)
        super().__init__((inputs, target), batch_size, shuffle, validation_split)


class ToyRegressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3)
        return self.linear(x)[:, 0]  # (B,)


def test_test_py_reports_a_regression_run_over_the_whole_test_split(tmp_path, monkeypatch,
                                                                     capsys) -> None:  # fmt: skip
    import data_loader.data_loaders
    import model.model
    import train

    monkeypatch.setattr(data_loader.data_loaders, "ToyRegressionLoader", ToyRegressionLoader,
                        raising=False)  # fmt: skip
    monkeypatch.setattr(model.model, "ToyRegressor", ToyRegressor, raising=False)
    config = {
        "name": "Toy_Regression", "seed": 0, "arch": {"type": "ToyRegressor", "args": {}},
        "data_loader": {"type": "ToyRegressionLoader",
                        "args": {"batch_size": 16, "validation_split": 0.2}},
        "optimizer": {"type": "SGD", "args": {"lr": 0.05}}, "loss": {"type": "MSELoss"},
        "metrics": [{"type": "R2Score", "args": {}, "name": "r2"}],
        "trainer": {"epochs": 2, "save_dir": str(tmp_path / "saved"), "progress_bar": False,
                    "monitor": "min val_loss"},
    }  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    code, stderr = run_in_process(train.main, ["-c", str(tmp_path / "config.json")], capsys)
    assert code == 0, stderr
    models = run_dir(tmp_path / "saved", "Toy_Regression")
    code, stderr = run_in_process(test_script.main, ["-r", str(models)], capsys)
    assert code == 0, stderr
    metrics = read_json(models / "model_best.test_metrics.json")
    regressor = ToyRegressor()
    regressor.load_state_dict(load(models / "model_best.pth")["state_dict"])
    inputs, target = ToyRegressionLoader(90, training=False).tensors
    with torch.no_grad():
        output = regressor(inputs)  # (90,) the whole test split at once
    whole = r2_score(output, target).item()
    report = metrics["report"]
    assert report["kind"] == "regression" and report["n_values"] == metrics["n_samples"] == 90
    assert report["r2"] == pytest.approx(whole, abs=1e-6)
    assert metrics["r2"] == pytest.approx(whole, abs=1e-6)  # the metrics entry: the same value
    assert report["rmse"] == pytest.approx(mean_squared_error(output, target).sqrt().item())
    for name in ("predicted_vs_true", "residuals"):
        assert mark_pixels(models / f"model_best.{name}.png") > 40
    log = tmp_path / "saved" / "log" / "Toy_Regression" / models.name / "test"
    events = EventAccumulator(str(log), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert set(events.Tags()["images"]) == {"test/predicted_vs_true", "test/residuals"}
    assert "test/regression/text_summary" in events.Tags()["tensors"]
    # Evaluated again with no report: the pictures of the first evaluation go too.
    code, stderr = run_in_process(test_script.main, ["-r", str(models), "-o", "test.report=none"],
                                  capsys)  # fmt: skip
    assert code == 0, stderr
    assert "report" not in read_json(models / "model_best.test_metrics.json")
    assert not list(models.glob("model_best.*.png"))
