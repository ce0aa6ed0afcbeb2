"""The base class every model in `model/` derives from."""

from abc import ABC, abstractmethod

import torch
from torch import nn


class BaseModel(nn.Module, ABC):
    """An `nn.Module` that must define `forward` and prints its trainable-parameter count."""

    @abstractmethod
    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The model's computation; a subclass without one cannot be instantiated."""

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def __str__(self) -> str:
        return f"{super().__str__()}\nTrainable parameters: {self.num_trainable_parameters():,}"
