"""Loss functions a config can name in `loss`; `torch.nn` loss classes work too."""

import torch
import torch.nn.functional as F


def nll_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of log-probabilities `output` (B, C) for class ids `target` (B,)."""
    return F.nll_loss(output, target)


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of raw scores `output` (B, C) for class ids `target` (B,)."""
    return F.cross_entropy(output, target)
