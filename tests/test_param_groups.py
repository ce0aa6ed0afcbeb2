"""Parameter groups from the config (utils/config/param_groups.py), with frozen parameters
(`BaseModel.freeze`): what each parameter trains at, on a small model of the test's own."""

import pytest
import torch
from torch import nn

from base import BaseModel
from builder import build_optimizers
from utils.errors import UserError


def optimizer_of(model: nn.Module, node: dict) -> torch.optim.Optimizer:
    return build_optimizers({"optimizer": node}, {"model": model})["model"]


class Toy(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 4)
        return self.head(self.norm(self.body(x)))  # (B, 2)


def test_each_group_trains_at_its_own_lr_and_overlapping_entries_merge() -> None:
    """SGD without momentum: each parameter moves by -lr * (grad + weight_decay * weight)
    with its group's lr and weight decay; the head's bias takes the head's lr AND no weight
    decay (later entries override earlier ones only where they set the same option)."""
    torch.manual_seed(0)
    model = Toy()
    entries = [{"params": ["head.*"], "lr": 0.01},
               {"params": ["norm_and_bias"], "weight_decay": 0}]  # fmt: skip
    node = {"type": "SGD", "args": {"lr": 0.1, "weight_decay": 0.5}, "param_groups": entries}
    optimizer = optimizer_of(model, node)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [
        (g["lr"], g["weight_decay"], [names[id(p)] for p in g["params"]])
        for g in optimizer.param_groups
    ]
    assert groups == [
        (0.1, 0.5, ["body.weight"]),  # no entry: the optimizer's args
        (0.1, 0, ["body.bias", "norm.weight", "norm.bias"]),
        (0.01, 0.5, ["head.weight"]),
        (0.01, 0, ["head.bias"]),
    ]
    options = {name: (lr, decay) for lr, decay, members in groups for name in members}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(torch.randn(8, 4)).square().mean().backward()
    optimizer.step()
    for name, parameter in model.named_parameters():
        lr, decay = options[name]
        expected = before[name] - lr * (parameter.grad + decay * before[name])
        torch.testing.assert_close(parameter.detach(), expected, rtol=0, atol=1e-7)


def test_frozen_parameters_are_in_no_group() -> None:
    model = Toy()
    model.freeze(["body.*"])
    node = {"type": "SGD", "args": {"lr": 0.1}, "param_groups": [{"params": ["norm_and_bias"],
                                                                  "weight_decay": 0}]}  # fmt: skip
    optimizer = optimizer_of(model, node)
    assert [len(g["params"]) for g in optimizer.param_groups] == [1, 3]  # head.weight; biases
    with pytest.raises(UserError, match=r"params\[0\]: 'body.\*' matches only frozen param"):
        node["param_groups"] = [{"params": ["body.*"], "lr": 0.01}]
        optimizer_of(model, node)
    with pytest.raises(UserError, match=r"optimizer.param_groups\[0\].params: missing"):
        node["param_groups"] = [{"lr": 0.01}]
        optimizer_of(model, node)
