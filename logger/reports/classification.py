"""The report of a classifier: per-class precision, recall and F1 and the confusion matrix over
the whole split (torchmetrics), and a grid of its surest mistakes."""

import logging
from typing import TYPE_CHECKING, Any

import torch

from logger.reports.pictures import confusion_matrix_picture, sample_grid
from logger.reports.report import NotReportable, Report, ReportResult, WorstSamples, describe
from utils.batch import is_image_batch

if TYPE_CHECKING:
    from torchmetrics import MetricCollection

logger = logging.getLogger(__name__)

# Per-class values and their macro averages: the report's name, torchmetrics' class.
CLASSWISE = {"precision": "MulticlassPrecision", "recall": "MulticlassRecall",
             "f1": "MulticlassF1Score"}  # fmt: skip
IGNORED = -1  # what a target outside [0, C) becomes, so that no metric counts it


def class_names(data_loader: Any) -> list | None:
    """The loader's own `classes` (set one on a loader of tensors), else its dataset's
    (torchvision's data sets have one), else None: the classes are then named by index."""
    for holder in (data_loader, getattr(data_loader, "dataset", None)):
        names = getattr(holder, "classes", None)
        if names is not None:
            return list(names)
    return None


class ClassificationReport(Report):
    """For output (B, C) scores (logits or log-probabilities) and targets (B,) class indices.
    The predicted class is the highest score; its probability, the softmax of the output."""

    name = "classification"
    pictures = ("confusion_matrix", "misclassified")

    def __init__(self, data_loader: Any, n_worst: int) -> None:
        super().__init__(data_loader, n_worst)
        self.metrics: MetricCollection | None = None  # made at the first batch: C is known
        self.outside = torch.zeros((), dtype=torch.long)  # targets outside [0, C), counted
        self.worst = WorstSamples(n_worst)
        self.grid_skipped = None if n_worst else "none asked for (--worst 0)"

    def misfit(self, inputs: Any, output: Any, target: Any) -> str | None:
        if not (isinstance(output, torch.Tensor) and output.dim() == 2):
            return f"the model's output is not (batch, classes) scores: {describe(output)}"
        if not isinstance(target, torch.Tensor):
            return f"the targets are not class indices: {type(target).__name__}"
        integer = not (
            target.is_floating_point() or target.is_complex() or target.dtype == torch.bool
        )
        if not integer or target.shape != output.shape[:1]:
            return "the targets are not class indices, one per sample: " \
                f"{target.dtype} {describe(target)} for output {describe(output)}"  # fmt: skip
        if self.metrics is not None and output.shape[1] != self.n_classes:
            return f"the number of classes changed from {self.n_classes} to {output.shape[1]}"
        return None

    def _start(self, n_classes: int, device: torch.device) -> None:
        import torchmetrics.classification as kinds  # slow imports, only when evaluated
        from torchmetrics import MetricCollection

        self.n_classes = n_classes
        options = {"num_classes": n_classes, "ignore_index": IGNORED, "validate_args": False}
        metric = {name: getattr(kinds, kind) for name, kind in CLASSWISE.items()}
        self.metrics = MetricCollection({  # one update serves the six that share counts
            "confusion": kinds.MulticlassConfusionMatrix(**options),
            **{name: made(average=None, **options) for name, made in metric.items()},
            **{f"macro_{name}": made(average="macro", **options) for name, made in metric.items()},
        }).to(device)  # fmt: skip
        self.outside = self.outside.to(device)

    def update(self, inputs: Any, output: torch.Tensor, target: torch.Tensor) -> None:
        if self.metrics is None:
            self._start(output.shape[1], output.device)
        target = target.to(output.device, torch.long, non_blocking=True)  # (B,)
        inside = (target >= 0) & (target < self.n_classes)  # (B,)
        self.outside += (~inside).sum()
        self.metrics.update(output, torch.where(inside, target, IGNORED))
        if self.grid_skipped is None and not is_image_batch(inputs):
            self.grid_skipped = "the inputs are not image batches (B, C, H, W)"
        if self.grid_skipped is None:
            confidence, predicted = output.float().softmax(1).max(1)  # (B,) each
            score = torch.where(predicted != target, confidence, -1.0)  # right ones: never shown
            self.worst.update(score, inputs=inputs, target=target, predicted=predicted)

    def finish(self, title: str) -> ReportResult:
        if self.metrics is None:
            raise NotReportable("there were no samples")
        outside = int(self.outside)
        if outside:
            raise NotReportable(f"{outside} targets are not class indices in [0, {self.n_classes})")
        values = {name: value.cpu() for name, value in self.metrics.compute().items()}
        confusion = values["confusion"]  # (C, C): rows the true class, columns the predicted
        names = [str(name) for name in class_names(self.data_loader) or []]
        if len(names) != self.n_classes:
            names = [str(index) for index in range(self.n_classes)]
        summary = _summary(values, names)
        right, total = int(confusion.trace()), int(confusion.sum())
        pictures = {"confusion_matrix": confusion_matrix_picture(
            confusion, names, f"{title}: {right} of {total} test samples right")}  # fmt: skip
        grid = self._mistakes_grid(names)
        if grid is not None:
            pictures["misclassified"] = grid
        rows = [["class", *CLASSWISE, "support"]]
        for row in [*summary["per_class"], {"name": "macro average", **summary["macro_average"]}]:
            rows.append(
                [row["name"], *(_number(row[key]) for key in CLASSWISE), str(row["support"])]
            )
        return ReportResult(summary, rows, pictures)

    def _mistakes_grid(self, names: list[str]) -> Any:
        mistakes = None if self.grid_skipped else self.worst.result()
        if mistakes is None:
            logger.info("no grid of misclassified examples: %s",
                        self.grid_skipped or "every test sample is right")  # fmt: skip
            return None
        captions = [
            [(f"true: {names[true]}", ""), (f"pred: {names[predicted]}", f" {confidence:.2f}")]
            for true, predicted, confidence in zip(mistakes["target"].tolist(),
                mistakes["predicted"].tolist(), mistakes["score"].tolist(), strict=True)
        ]  # fmt: skip
        title = (f"the {len(captions)} most confident mistakes: true class, predicted class "
                 "and its probability")  # fmt: skip
        return sample_grid(mistakes["inputs"], captions, title)


def _summary(values: dict[str, torch.Tensor], names: list[str]) -> dict:
    """The per-class values (recall and F1 null for a class without samples), their macro
    averages and the confusion matrix, as plain data."""
    confusion = values["confusion"]
    support = confusion.sum(1).tolist()
    per_class = []
    for k, name in enumerate(names):
        row = {key: values[key][k].item() for key in CLASSWISE}
        if not support[k]:
            row.update(recall=None, f1=None)
        per_class.append({"index": k, "name": name, **row, "support": support[k]})
    macro = {key: values[f"macro_{key}"].item() for key in CLASSWISE}
    return {"per_class": per_class, "macro_average": {**macro, "support": int(confusion.sum())},
            "confusion_matrix": confusion.tolist()}  # fmt: skip


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
