"""Metrics a config can name in `metrics`.

Each takes the model output and the targets and returns a 0-d tensor on the same device: no
`.item()`, so computing a metric never waits for the GPU. These two are for classification:
scores (B, C) and class indices (B,). A metric of your own for another task (regression:
output and target both (B, 1)) takes what your model and loader give, in the same way.
"""

import torch


def accuracy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of samples whose highest-scoring class is the target."""
    _check_classes(target)
    return (output.argmax(dim=1) == target).float().mean()


def top_k_acc(output: torch.Tensor, target: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Fraction of samples whose target is among the `k` highest-scoring classes.

    A config's `k` is checked when the config is read (`METRIC_ARGS` in utils/config/keys.py);
    this check is for code that calls the function itself.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k: {k!r} is not valid; expected an integer >= 1")
    _check_classes(target)
    top_k = output.topk(min(k, output.shape[1]), dim=1).indices  # (B, k)
    return (top_k == target.unsqueeze(1)).any(dim=1).float().mean()


def _check_classes(target: torch.Tensor) -> None:
    """Refuse float targets, a regression's: against them a class index is never equal, and
    the metric would log 0 without a word (the trial step names the metric)."""
    if target.is_floating_point():
        raise ValueError(
            f"targets of dtype {str(target.dtype).removeprefix('torch.')} are not class "
            "indices: this is a classification metric; a regression takes another, such as "
            "MeanAbsoluteError"
        )
