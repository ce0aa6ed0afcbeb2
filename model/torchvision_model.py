"""Any torchvision classification model as `arch`, for transfer learning: weights from a local
file (or, when the config names them, torchvision's own download), a new head for
`num_classes`, a first convolution for `in_channels`, and frozen parameters by name."""

import importlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import torch
from annotated_types import Ge, MinLen
from torch import nn

from base import BaseModel
from base.base_model import class_scores
from utils.checkpoint.saved_states import load_weights
from utils.errors import UserError, did_you_mean, error_summary

logger = logging.getLogger(__name__)

KEY = "arch.args"  # where this model's arguments sit in a one-model config
WEIGHT_FILE_SUFFIXES = (".pth", ".pt")


def _models() -> Any:
    """`torchvision.models`, imported when this model is built (it takes over a second, and
    every run imports this module when it looks up its `arch`)."""
    return importlib.import_module("torchvision.models")


class TorchvisionModel(BaseModel):
    """A torchvision classification model by `name` (`resnet18`, `vit_b_16`, ...), returning
    log-probabilities (pair it with `nll_loss`, like the other models here); with
    `log_softmax: false`, its head's raw outputs (a regression's `num_classes` values, or
    logits for `cross_entropy`).

    `weights`: null (random initial weights); a file (a path: it names an existing file,
    contains '/' or ends in .pth or .pt) holding a state dict of that torchvision model, or
    one of our checkpoints; or the name of torchvision's weights (`"IMAGENET1K_V1"`,
    `"DEFAULT"`), the one case that downloads. The weights are loaded with the head they were
    saved with; then the head is replaced by a new one for `num_classes` and the first
    convolution by one for `in_channels`, initialised from the loaded kernel. `freeze` lists
    fnmatch patterns of parameter names not to train (`BaseModel.freeze`).

    Parameter names are torchvision's own (`layer1.0.conv1.weight`, `fc.weight`): this
    module shares the network's tables of parameters, buffers and submodules, so `freeze`,
    `optimizer.param_groups` and the checkpoint's `state_dict` all use those names.
    """

    initial_weights_argument = "weights"

    def __init__(
        self,
        name: str,
        num_classes: Annotated[int, Ge(1)] = 10,
        weights: Annotated[str, MinLen(1)] | None = None,
        in_channels: Annotated[int, Ge(1)] = 3,
        freeze: Sequence[str] = (),
        log_softmax: bool = True,
    ) -> None:
        super().__init__()
        _check_name(name)
        if log_softmax and num_classes == 1:
            raise UserError(f"{KEY}.num_classes: 1, under a log-softmax, is always 0; for one "
                            f"value (a regression) set {KEY}.log_softmax to false")  # fmt: skip
        self.log_softmax = log_softmax
        if weights is None:
            network = _models().get_model(name, weights=None, num_classes=num_classes)
        else:
            network = _pretrained(name, weights)
            head, classes = _head(network)
            if classes != num_classes:  # (a head of that size keeps its weights)
                network.set_submodule(*_new_head(network, num_classes))
            stem, conv = _first_conv(network)
            kept = "kept" if classes == num_classes else f"new, with {num_classes} outputs"
            logger.info("%s.weights: %s loaded into %s; head %s (%d outputs): %s; first "
                        "convolution %s: %d -> %d input channels", KEY, weights, name, head,
                        classes, kept, stem, conv.in_channels, in_channels)  # fmt: skip
        _adapt_first_conv(network, in_channels)
        self._parameters, self._buffers = network._parameters, network._buffers
        self._non_persistent_buffers_set = network._non_persistent_buffers_set
        self._modules = network._modules
        # Not registered as a submodule: its parameters are this module's own, shared above.
        object.__setattr__(self, "network", network)
        self.freeze(freeze, f"{KEY}.freeze")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, in_channels, H, W)
        output = self.network(x)  # (B, num_classes)
        return class_scores(output, self.log_softmax)

    def train(self, mode: bool = True) -> "TorchvisionModel":
        self.network.training = mode  # (its submodules are this module's: set by super())
        return super().train(mode)


def _check_name(name: str) -> None:
    """(The other arguments are checked against their type hints before the model is built.)"""
    names = _models().list_models(module=_models())
    if name not in names:
        raise UserError(
            f"{KEY}.name: {name!r} is not a torchvision classification model"
            f"{did_you_mean(str(name), names)}"
        )


def is_weights_file(weights: str) -> bool:
    """Whether `weights` is a file path rather than the name of torchvision's weights."""
    return "/" in weights or weights.endswith(WEIGHT_FILE_SUFFIXES) or Path(weights).is_file()


def _pretrained(name: str, weights: str) -> nn.Module:
    """The network with the weights loaded, its head still theirs (e.g. 1000 classes)."""
    state = _read_file(name, weights) if is_weights_file(weights) else _download(name, weights)
    network = _models().get_model(name, weights=None)
    head, default_classes = _head(network)
    if f"{head}.weight" not in state:
        raise UserError(f"{KEY}.weights: {weights} is not a state dict of torchvision's "
                        f"{name}: it has no {head}.weight (the classification layer)")  # fmt: skip
    classes = state[f"{head}.weight"].shape[0]
    if classes != default_classes:  # saved with another head: build that one, to load it
        network = _models().get_model(name, weights=None, num_classes=classes)
    stem = f"{_first_conv(network)[0]}.weight"
    if stem in state and state[stem].ndim == 4:  # saved with other input channels (ours)
        _adapt_first_conv(network, state[stem].shape[1])
    try:
        load_weights(network, state)
    except UserError as error:
        problem = getattr(error, "problem", str(error))
        raise UserError(f"{KEY}.weights: {weights} does not fit torchvision's {name}: "
                        f"{problem}") from None  # fmt: skip
    return network


def _read_file(name: str, weights: str) -> dict[str, torch.Tensor]:
    path = Path(weights)
    if not path.is_file():
        save = (f"import torch, torchvision; torch.save(torchvision.models.{name}("
                f"weights='DEFAULT').state_dict(), '{weights}')")  # fmt: skip
        raise UserError(
            f"{KEY}.weights: no file {weights}; to put torchvision's ImageNet weights there "
            f'once (a download): mkdir -p {path.parent} && python -c "{save}"; or set '
            f"{KEY}.weights to null to start from random weights"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # whatever the file holds, it is not weights we can read
        raise UserError(f"{KEY}.weights: {weights} does not load as a state dict of tensors "
                        f"({error_summary(error)})") from None  # fmt: skip
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # one of our checkpoints
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise UserError(f"{KEY}.weights: {weights} is not a state dict (parameter names to "
                        "tensors) nor one of our checkpoints")  # fmt: skip
    return state


def _download(name: str, weights: str) -> dict[str, torch.Tensor]:
    """torchvision's weights by name, through its own download (and cache)."""
    choices = _models().get_model_weights(name)
    if weights not in choices.__members__:
        raise UserError(
            f"{KEY}.weights: {weights!r} is neither a file (a path names an existing file, "
            f"contains '/' or ends in .pth or .pt) nor weights torchvision has for {name}; "
            f"valid: {', '.join(choices.__members__)}"
        )
    chosen = choices[weights]
    try:
        return chosen.get_state_dict(progress=False)
    except Exception as error:  # no network, a proxy, a full disk: one line, then the way out
        raise UserError(
            f"{KEY}.weights: downloading {name}'s {weights} weights from {chosen.url} failed "
            f"({error_summary(error)}); download the file by hand and give its path as "
            f"{KEY}.weights"
        ) from None


def _head(network: nn.Module) -> tuple[str, int]:
    """The final classification layer's name and class count: the last `nn.Linear` (or, in
    SqueezeNet, 1x1 `nn.Conv2d`) in module order, which torchvision registers last."""
    found = [(name, _outputs(module)) for name, module in network.named_modules()]
    found = [(name, outputs) for name, outputs in found if outputs is not None]
    if not found:
        raise UserError(f"{KEY}.name: {type(network).__name__} has no final linear layer to "
                        "replace with a head for num_classes")  # fmt: skip
    return found[-1]


def _new_head(network: nn.Module, num_classes: int) -> tuple[str, nn.Module]:
    """The head's name and a new head for `num_classes` (freshly initialised) in its place."""
    name, _ = _head(network)
    old = network.get_submodule(name)
    bias = old.bias is not None
    if isinstance(old, nn.Linear):
        return name, nn.Linear(old.in_features, num_classes, bias=bias)
    return name, nn.Conv2d(old.in_channels, num_classes, kernel_size=1, bias=bias)


def _first_conv(network: nn.Module) -> tuple[str, nn.Conv2d]:
    """The convolution the input goes into: the first `nn.Conv2d` in module order."""
    return next((n, m) for n, m in network.named_modules() if isinstance(m, nn.Conv2d))


def _adapt_first_conv(network: nn.Module, in_channels: int) -> None:
    """Replace the first convolution by one taking `in_channels`, its kernel the old one's
    summed over input channels, divided by `in_channels`, on each: an image whose channels
    are equal (a grey one) gives what the old convolution gave it, so learned features
    survive (for 1 channel from RGB: the sum of the RGB kernels)."""
    name, old = _first_conv(network)
    if old.in_channels == in_channels:
        return
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                    old.dilation, old.groups, old.bias is not None, old.padding_mode)  # fmt: skip
    with torch.no_grad():  # (out, C_old, kh, kw) -> (out, in_channels, kh, kw)
        new.weight.copy_(old.weight.sum(1, keepdim=True).expand_as(new.weight) / in_channels)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    network.set_submodule(name, new)


def _outputs(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1):
        return module.out_channels
    return None
