"""The base class every model in `model/` derives from."""

import fnmatch
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from utils.errors import UserError

logger = logging.getLogger(__name__)


class BaseModel(nn.Module, ABC):
    """An `nn.Module` that must define `forward`, can freeze parameters by name, and prints
    its trainable-parameter count."""

    # The constructor argument, if any, that names weights to start from (a file, a download).
    # A run whose weights come from a checkpoint (resume, test.py, fine-tuning) builds the
    # model with it set to None: the file need not exist any more, nor be read in vain.
    initial_weights_argument: str | None = None

    @abstractmethod
    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The model's computation; a subclass without one cannot be instantiated."""

    def freeze(self, patterns: Sequence[str], key: str = "arch.args.freeze") -> None:
        """Stop training the parameters whose names (`named_parameters()`, e.g.
        `layer1.0.conv1.weight`) match any of the fnmatch `patterns`. A pattern that matches
        nothing is an error naming `key[i]`: a typo would otherwise freeze nothing, silently.

        A batch-norm layer whose parameters are all frozen also keeps its running statistics
        (see `train`), so a frozen layer computes exactly what it computed before training.
        """
        names = [name for name, _ in self.named_parameters()]
        for index, pattern in enumerate(patterns):
            if not isinstance(pattern, str) or not fnmatch.filter(names, pattern):
                raise UserError(
                    f"{key}[{index}]: {pattern!r} matches no parameter name; names look like "
                    f"{', '.join(names[:3])} (fnmatch patterns, e.g. 'layer1.*')"
                )
        frozen = [
            parameter
            for name, parameter in self.named_parameters()
            if any(fnmatch.fnmatch(name, pattern) for pattern in patterns)
        ]
        for parameter in frozen:
            parameter.requires_grad_(False)
        if frozen:
            count, total = (sum(p.numel() for p in ps) for ps in (frozen, self.parameters()))
            tensors = f"{len(frozen)} tensor{'s' if len(frozen) > 1 else ''}"
            logger.info("%s: %s of %s parameters frozen (%s matching %s)", key, f"{count:,}",
                        f"{total:,}", tensors, ", ".join(patterns))  # fmt: skip
        self.train(self.training)  # frozen batch-norm layers go to eval mode now

    def train(self, mode: bool = True) -> "BaseModel":
        """`nn.Module.train`, but a batch-norm layer whose parameters are all frozen stays in
        eval mode: it normalises with its running statistics and never updates them."""
        super().train(mode)
        for module in self.modules():
            if not isinstance(module, _BatchNorm):
                continue
            parameters = list(module.parameters(recurse=False))
            if parameters and not any(p.requires_grad for p in parameters):
                module.eval()
        return self

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def __str__(self) -> str:
        frozen = [p for p in self.parameters() if not p.requires_grad]
        tensors = f"{len(frozen)} tensor{'s' if len(frozen) > 1 else ''}"
        note = f" ({sum(p.numel() for p in frozen):,} frozen in {tensors})"
        count = f"{self.num_trainable_parameters():,}{note if frozen else ''}"
        return f"{super().__str__()}\nTrainable parameters: {count}"


def class_scores(logits: torch.Tensor, log_softmax: bool) -> torch.Tensor:
    """A classifier's output (B, C): log-probabilities over the classes (for `nll_loss`), or
    with `log_softmax` false the logits themselves (for `cross_entropy`, or independent labels
    with `BCEWithLogitsLoss`: under a log-softmax each would be <= 0, never a label)."""
    return torch.log_softmax(logits, dim=1) if log_softmax else logits
