"""The report of a model that outputs images of its inputs' shape (an autoencoder, a denoiser):
the mean squared and absolute error over the whole split (torchmetrics), and its worst
reconstructions drawn beside their inputs."""

import logging
from typing import Any

import torch

from logger.reports.pictures import TILE, sample_grid
from logger.reports.report import NotReportable, Report, ReportResult, WorstSamples, describe
from utils.batch import is_image_batch

logger = logging.getLogger(__name__)


class ReconstructionReport(Report):
    """For inputs (B, C, H, W) with 1, 3 or 4 channels and an output of the same shape. The
    output is compared with the targets when they have that shape too (a denoiser's clean
    images), else with the inputs; targets that differ from the inputs are drawn as well."""

    name = "reconstruction"
    pictures = ("reconstructions",)

    def __init__(self, data_loader: Any, n_worst: int) -> None:
        from torchmetrics import MetricCollection  # slow imports, only when evaluated
        from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError

        super().__init__(data_loader, n_worst)
        self.metrics = MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()})
        self.worst = WorstSamples(n_worst)
        self.samples = 0
        self.draws_target: bool | None = None  # whether the targets are images of their own

    def misfit(self, inputs: Any, output: Any, target: Any) -> str | None:
        if not is_image_batch(inputs):
            return f"the inputs are not image batches (B, C, H, W): {describe(inputs)}"
        if not (isinstance(output, torch.Tensor) and output.shape == inputs.shape):
            return f"the model's output {describe(output)} is not the inputs' shape " \
                f"{describe(inputs)}"  # fmt: skip
        return None

    def update(self, inputs: torch.Tensor, output: torch.Tensor, target: Any) -> None:
        same_shape = isinstance(target, torch.Tensor) and target.shape == inputs.shape
        reference = target.to(output.device, non_blocking=True) if same_shape else inputs
        if self.draws_target is None:  # one look, at the first batch
            self.draws_target = same_shape and not torch.equal(reference, inputs)
            self.metrics.to(output.device)
        output = output.detach().float()
        self.metrics.update(output, reference.float())
        self.samples += len(output)
        error = (output - reference).square().flatten(1).mean(1)  # (B,) each sample's MSE
        images = [inputs, output, reference] if self.draws_target else [inputs, output]
        self.worst.update(error, images=torch.stack([image.float() for image in images], 1))

    def finish(self, title: str) -> ReportResult:
        if not self.samples:
            raise NotReportable("there were no samples")
        values = {name: value.item() for name, value in self.metrics.compute().items()}
        rows = [["value", "over the split"], ["MSE", f"{values['mse']:.6g}"],
                ["MAE", f"{values['mae']:.6g}"], ["samples", str(self.samples)]]  # fmt: skip
        worst = self.worst.result()
        pictures = {}
        if worst is None:
            why = "none asked for (--worst 0)" if not self.n_worst else "no finite error"
            logger.info("no grid of reconstructions: %s", why)
        else:
            shown = "input, output, target" if self.draws_target else "input, output"
            captions = [[(f"mse {error:.4g}", "")] for error in worst["score"].tolist()]
            pictures["reconstructions"] = sample_grid(
                side_by_side(worst["images"]), captions,
                f"{title}: the {len(captions)} worst reconstructions ({shown}) and their MSE",
                tile=TILE * worst["images"].shape[1],
            )  # fmt: skip
        return ReportResult({**values, "n_samples": self.samples}, rows, pictures)


def side_by_side(images: torch.Tensor) -> torch.Tensor:
    """(K, N, C, H, W) -> (K, C, H, N * W + N - 1): each sample's N images in a row, a
    column of its highest value between them (white once the grid scales each sample)."""
    gap = images.flatten(1).amax(1).view(-1, 1, 1, 1).expand(-1, *images.shape[2:4], 1)
    pieces = [piece for image in images.unbind(1) for piece in (gap, image)][1:]
    return torch.cat(pieces, dim=3)
