"""The report of a regression model: MAE, RMSE and R^2 over the whole split (torchmetrics), a
scatter of predicted against true values, and a histogram of the residuals."""

from typing import Any

import torch

from logger.reports.pictures import histogram_picture, scatter_picture
from logger.reports.report import NotReportable, Report, ReportResult, describe

MOST_POINTS = 20_000  # values drawn, a uniform sample of the split: enough to see its shape
MOST_OUTPUTS = 16  # values per sample reported each on its own (more is a signal, an image)


def _is_number_tensor(value: Any) -> bool:
    return (
        isinstance(value, torch.Tensor)
        and value.dim() >= 1
        and not (value.is_complex() or value.dtype == torch.bool)
    )


class RegressionReport(Report):
    """For output and targets of the same number of values per sample, any shape ((B,),
    (B, 1), (B, D), ...). With 2 to `MOST_OUTPUTS` values per sample, R^2 is the mean of each
    one's R^2, and each one's MAE, RMSE and R^2 are reported too (targets on other scales, or a
    model good at one output only, would hide in the pooled values); with more (a signal, an
    image), R^2 is that of all values pooled. The charts draw a uniform sample of the values
    (the lowest of seeded random keys), not the first batches'."""

    name = "regression"
    pictures = ("predicted_vs_true", "residuals")

    def __init__(self, data_loader: Any, n_worst: int) -> None:
        from torchmetrics import MetricCollection  # slow imports, only when evaluated
        from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

        super().__init__(data_loader, n_worst)
        self.metrics = MetricCollection({
            "mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False), "r2": R2Score(),
        })  # fmt: skip
        self.width: int | None = None  # values per sample
        self.samples = 0
        self.points = torch.empty(0, 2)  # (n, 2) true and predicted values, a sample of them
        self.keys = torch.empty(0)  # (n,) the random key of each, in [0, 1)
        self.sampling: torch.Generator | None = None  # seeded, on the outputs' device
        self.sums: torch.Tensor | None = None  # (4, D): |error|, error^2, target, target^2

    def misfit(self, inputs: Any, output: Any, target: Any) -> str | None:
        if not (_is_number_tensor(output) and output.is_floating_point()):
            return f"the model's output is not a tensor of numbers: {describe(output)}"
        if not _is_number_tensor(target):
            return f"the targets are not a tensor of numbers: {describe(target)}"
        if ((target == 0) | (target == 1)).all():  # errors and R^2 of logits say nothing there
            return "the targets are all 0 or 1: labels (multi-label tagging), not values"
        width = output[0].numel()
        if target.shape[0] != output.shape[0] or target[0].numel() != width:
            return f"the output {describe(output)} and the targets {describe(target)} do not " \
                "have the same number of values per sample"  # fmt: skip
        if self.width is not None and width != self.width:
            return f"the values per sample changed from {self.width} to {width}"
        return None

    def update(self, inputs: Any, output: torch.Tensor, target: torch.Tensor) -> None:
        n = output.shape[0]
        if self.width is None:
            self.width = output[0].numel()
            self.metrics.to(output.device)
        predicted = output.detach().float().reshape(n, -1)  # (B, D)
        true = target.to(output.device, non_blocking=True).float().reshape(n, -1)
        if self.width == 1 or self.width > MOST_OUTPUTS:  # (B,) or (B * D,): R2Score reads
            predicted, true = predicted.flatten(), true.flatten()  # (B, D) as D outputs
        self.metrics.update(predicted, true)
        if 2 <= self.width <= MOST_OUTPUTS:  # per output, in float64
            terms = torch.stack([(predicted - true).abs(), (predicted - true) ** 2, true, true**2])
            sums = terms.double().sum(1)  # (4, D)
            self.sums = sums if self.sums is None else self.sums + sums
        self.samples += n
        self._sample(torch.stack([true.flatten(), predicted.flatten()], 1))

    def _sample(self, pairs: torch.Tensor) -> None:
        """Keep the `MOST_POINTS` values with the lowest random keys: a uniform sample of all
        seen so far, chosen on the device (only candidates are copied off it)."""
        if self.sampling is None:
            self.sampling = torch.Generator(pairs.device).manual_seed(0)
        keys = torch.rand(len(pairs), generator=self.sampling, device=pairs.device)
        if len(self.keys) == MOST_POINTS:  # only a key below the highest kept one gets in
            candidates = keys < self.keys.max().item()
            keys, pairs = keys[candidates], pairs[candidates]
        keys, points = torch.cat([self.keys, keys.cpu()]), torch.cat([self.points, pairs.cpu()])
        if len(keys) > MOST_POINTS:
            lowest = keys.topk(MOST_POINTS, largest=False).indices
            keys, points = keys[lowest], points[lowest]
        self.keys, self.points = keys, points

    def finish(self, title: str) -> ReportResult:
        if self.samples < 2:
            raise NotReportable("R^2 needs at least two samples")
        values = {name: value.item() for name, value in self.metrics.compute().items()}
        true, predicted = self.points.unbind(1)  # (n,) each
        total = self.samples * self.width
        shown = f"{total} values" if len(true) == total else f"{len(true)} of {total} values"
        residuals = predicted - true
        scatter = scatter_picture(true, predicted, f"{title}: predicted against true, {shown}")
        histogram = histogram_picture(residuals, f"{title}: residuals, {shown}", "predicted - true")
        pictures = {"predicted_vs_true": scatter, "residuals": histogram}
        rows = [["value", "over the split"], ["MAE", f"{values['mae']:.6g}"],
                ["RMSE", f"{values['rmse']:.6g}"], ["R^2", f"{values['r2']:.6g}"],
                ["values", str(total)]]  # fmt: skip
        if 2 <= self.width <= MOST_OUTPUTS:
            each = values["per_output"] = self._per_output()
            for i, (mae, rmse, r2) in enumerate(zip(*each.values(), strict=True)):
                rows.append([f"output {i}", f"MAE {mae:.4g}, RMSE {rmse:.4g}, R^2 {r2:.4g}"])
        return ReportResult({**values, "n_values": total}, rows, pictures)

    def _per_output(self) -> dict[str, list[float]]:
        """Each output's MAE, RMSE and R^2 (1 - squared error / the targets' squared spread)."""
        errors, squares, targets, target_squares = self.sums.cpu()  # (D,) each
        spread = target_squares - targets**2 / self.samples
        each = {"mae": errors / self.samples, "rmse": (squares / self.samples).sqrt(),
                "r2": 1 - squares / spread}  # fmt: skip
        return {name: value.tolist() for name, value in each.items()}
