"""Loss functions a config can name in `loss`; `torch.nn` loss classes work too."""

import torch
import torch.nn.functional as F


def nll_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of log-probabilities `output` (B, C) for class ids `target` (B,)."""
    return F.nll_loss(output, target)


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of raw scores `output` (B, C) for class ids `target` (B,)."""
    return F.cross_entropy(output, target)


def multilabel_bce(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of logits `output` (B, L) for multi-hot labels `target` (B, L) of
    0s and 1s, integer or float: torchmetrics' multilabel metrics want them as integers,
    `BCEWithLogitsLoss` as floats, so one target serves both."""
    return F.binary_cross_entropy_with_logits(output, target.to(output.dtype))
