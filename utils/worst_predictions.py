"""The most confident mistakes of a classifier, kept as batches go by."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Mistakes:
    """Wrong predictions, most confident first (on the CPU)."""

    inputs: torch.Tensor  # (K, ...) the samples' inputs
    target: torch.Tensor  # (K,) the true class
    predicted: torch.Tensor  # (K,) the class the model chose
    confidence: torch.Tensor  # (K,) the probability the model gave the class it chose


class WorstPredictions:
    """The `n` wrong predictions made with the highest confidence in the wrong class.

    Never holds more than `n` samples: each batch's candidates are merged into the kept ones
    at once, on the device, without waiting for it. Of equally confident mistakes the one
    seen first is kept, so the choice does not depend on how the samples were batched.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self._kept: tuple[torch.Tensor, ...] | None = None  # (score, inputs, target, predicted)

    def update(
        self,
        inputs: torch.Tensor,
        target: torch.Tensor,
        predicted: torch.Tensor,
        confidence: torch.Tensor,
    ) -> None:
        """One batch: inputs (B, ...), target and predicted (B,) class indices, confidence (B,)
        the probability of the predicted class."""
        if self.n == 0:
            return
        score = torch.where(predicted != target, confidence.float(), -1.0)  # right ones: -1
        candidates = self._first_n(score, inputs, target, predicted)
        if self._kept is not None:
            merged = [torch.cat(pair) for pair in zip(self._kept, candidates, strict=True)]
            candidates = self._first_n(*merged)
        self._kept = candidates

    def _first_n(self, score: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The `n` highest scores and the rows that go with them, earlier rows first on ties."""
        order = torch.sort(score, descending=True, stable=True).indices[: self.n]
        return score[order], *(other[order.to(other.device)] for other in others)

    def result(self) -> Mistakes:
        """The mistakes kept (fewer than `n` when there were fewer), on the CPU."""
        if self._kept is None:
            return Mistakes(torch.empty(0), *(torch.empty(0, dtype=torch.long),) * 2,
                            torch.empty(0))  # fmt: skip
        score, inputs, target, predicted = (tensor.cpu() for tensor in self._kept)
        wrong = score >= 0  # (NaN scores, from non-finite outputs, are dropped too)
        return Mistakes(inputs[wrong], target[wrong], predicted[wrong], score[wrong])
