"""Per-class precision, recall, F1 and accuracy of a classifier, from its confusion matrix.

For class k, with N samples in all, `support` those whose true class is k, `predicted` those
classified as k, and TP those both:

- precision = TP / predicted: how many of the samples called k are k (0 when none is called k);
- recall = TP / support: the share of class k's samples classified correctly;
- f1 = 2 * precision * recall / (precision + recall) (0 when both are 0);
- accuracy = (TP + TN) / N, one class against the rest: TN counts the samples that are not k
  and were not called k, so it is high for every class when there are many classes.

A class with no samples has no recall or F1 (`None`). Macro averages are the plain means
over the classes that have samples; a class the test split lacks does not count.
"""

from dataclasses import dataclass

import torch


def count_confusion(
    confusion: torch.Tensor, target: torch.Tensor, predicted: torch.Tensor
) -> torch.Tensor:
    """Add a batch to `confusion` (C, C) in place (rows the true class, columns the predicted
    one); targets outside [0, C) are not counted. Returns how many were outside: a 0-d tensor
    on the device, so that counting never waits for it."""
    n_classes = confusion.shape[0]
    inside = (target >= 0) & (target < n_classes)  # (B,)
    cells = target.clamp(0, n_classes - 1) * n_classes + predicted  # (B,) flat cell index
    confusion.view(-1).index_add_(0, cells, inside.to(confusion.dtype))
    return (~inside).sum()


@dataclass(frozen=True)
class ClassificationReport:
    """What a classifier did on the test split, class by class."""

    confusion: torch.Tensor  # (C, C) int64 counts: rows the true class, columns the predicted
    class_names: list[str]  # (C,) from the dataset's `classes`, else the indices

    def per_class(self) -> list[dict[str, int | str | float | None]]:
        """One entry per class: its index and name, precision, recall, f1, accuracy, support."""
        counts = self.confusion.double()
        true_positives = counts.diagonal()
        support, predicted = counts.sum(1), counts.sum(0)
        total = counts.sum().clamp_min(1)
        precision = true_positives / predicted.clamp_min(1)  # 0 where never predicted
        recall = true_positives / support.clamp_min(1)
        f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-300)
        accuracy = (total - support - predicted + 2 * true_positives) / total
        rows = []
        for index, name in enumerate(self.class_names):
            has_samples = support[index] > 0
            rows.append({
                "index": index,
                "name": name,
                "precision": precision[index].item(),
                "recall": recall[index].item() if has_samples else None,
                "f1": f1[index].item() if has_samples else None,
                "accuracy": accuracy[index].item(),
                "support": int(support[index].item()),
            })  # fmt: skip
        return rows

    def macro_average(self) -> dict[str, float | int]:
        """The mean of each value over the classes with samples; `support` is all samples."""
        rows = [row for row in self.per_class() if row["support"] > 0]
        means = {
            key: sum(row[key] for row in rows) / max(len(rows), 1)
            for key in ("precision", "recall", "f1", "accuracy")
        }
        return {**means, "support": int(self.confusion.sum().item())}

    def as_json(self) -> dict:
        """The report as plain data, for `<checkpoint>.test_metrics.json`."""
        return {
            "per_class": self.per_class(),
            "macro_average": self.macro_average(),
            "confusion_matrix": self.confusion.tolist(),
        }
