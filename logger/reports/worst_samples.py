"""The worst samples of an evaluation (a classifier's surest mistakes, the worst-reconstructed
images), kept as batches go by."""

import torch


class WorstSamples:
    """The `n` samples with the highest scores, with the tensors that go with each.

    Never holds more than `n` samples: each batch's are merged into the kept ones at once, on
    the device, without waiting for it. Of equal scores the sample seen first is kept, so the
    choice does not depend on how the samples were batched. A negative score (or NaN) marks
    a sample never to show (a right prediction).
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self._kept: dict[str, torch.Tensor] | None = None  # "score" and the rows, (<= n, ...)

    def update(self, score: torch.Tensor, **rows: torch.Tensor) -> None:
        """One batch: `score` (B,), and each of `rows` (B, ...)."""
        if self.n == 0:
            return
        candidates = self._first_n({"score": score.float(), **rows})
        if self._kept is not None:
            candidates = self._first_n(
                {key: torch.cat([self._kept[key], value]) for key, value in candidates.items()}
            )
        self._kept = candidates

    def _first_n(self, rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The `n` highest scores and the rows that go with them, earlier rows first on ties."""
        order = torch.sort(rows["score"], descending=True, stable=True).indices[: self.n]
        return {key: value[order.to(value.device)] for key, value in rows.items()}

    def result(self) -> dict[str, torch.Tensor] | None:
        """The kept samples (fewer than `n` when there were fewer), worst first, on the CPU:
        "score" and the rows; None when there is none."""
        if self._kept is None:
            return None
        kept = {key: value.cpu() for key, value in self._kept.items()}
        shown = kept["score"] >= 0  # (NaN scores, from non-finite outputs, are dropped too)
        return {key: value[shown] for key, value in kept.items()} if shown.any() else None
