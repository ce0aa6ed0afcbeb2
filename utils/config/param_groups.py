"""Parameter groups from the config: per-pattern optimizer options (a lower lr for a
pretrained backbone, no weight decay on norms and biases), for any model and optimizer.

`optimizer.param_groups` is a list of entries `{"params": [PATTERN, ...], OPTION: VALUE, ...}`.
A pattern is an fnmatch pattern of parameter names (`layer4.*`), or `norm_and_bias`: every
bias and every parameter of a normalisation layer, found by the layer's type. A parameter
takes the options of every entry that matches it, later entries overriding earlier ones;
parameters with the same options form one torch parameter group. The first group holds the
parameters no entry matches (the optimizer's `args` alone); the others follow in the order
of their first parameter in the model. Frozen parameters are in no group.
"""

import fnmatch
import inspect
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from utils.errors import UserError, did_you_mean, error_summary

logger = logging.getLogger(__name__)

NORM_AND_BIAS = "norm_and_bias"
NORM_LAYERS = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*d, SyncBatchNorm, InstanceNorm*d
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
    nn.LocalResponseNorm,
)


@dataclass
class ParamGroup:
    """One torch parameter group: the options its entries set, and the names it holds."""

    options: dict[str, Any]
    names: list[str] = field(default_factory=list)
    selectors: list[str] = field(default_factory=list)  # the patterns that chose it


def norm_and_bias_names(model: nn.Module) -> set[str]:
    """Every bias, and every parameter of a normalisation layer (by the layer's type)."""
    names = set()
    for prefix, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            if name == "bias" or isinstance(module, NORM_LAYERS):
                names.add(f"{prefix}.{name}" if prefix else name)
    return names


def group_parameters(model: nn.Module, entries: list, path: str) -> list[ParamGroup]:
    """The groups the config's `entries` make of `model`'s trainable parameters (see the
    module docstring); a malformed entry, or a pattern that matches no trainable parameter,
    is an error naming it."""
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    options: dict[str, dict[str, Any]] = {name: {} for name in trainable}
    chosen_by: dict[str, list[str]] = {name: [] for name in trainable}
    for index, entry in enumerate(entries):
        for number, pattern in enumerate(_patterns(entry, f"{path}[{index}]")):
            where = f"{path}[{index}].params[{number}]"
            for name in _matching(model, trainable, pattern, where):
                options[name].update({k: v for k, v in entry.items() if k != "params"})
                chosen_by[name].append(pattern)
    groups: dict[str, ParamGroup] = {"{}": ParamGroup({})}  # the default group comes first
    for name in trainable:
        key = json.dumps(options[name], sort_keys=True)
        group = groups.setdefault(key, ParamGroup(options[name]))
        group.names.append(name)
        group.selectors.extend(p for p in chosen_by[name] if p not in group.selectors)
    order = {pattern: i for i, entry in reversed(list(enumerate(entries))) for pattern in
             entry["params"]}  # fmt: skip
    for group in groups.values():
        group.selectors.sort(key=order.__getitem__)  # in the order the config lists them
    return [group for group in groups.values() if group.names]


def _matching(model: nn.Module, trainable: list[str], pattern: str, where: str) -> list[str]:
    """The `trainable` names `pattern` matches; none is an error saying whether it matches
    frozen parameters only."""
    if pattern == NORM_AND_BIAS:
        special = norm_and_bias_names(model)
        matched = [name for name in trainable if name in special]
    else:
        matched = fnmatch.filter(trainable, pattern)
    if matched:
        return matched
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    why = ("only frozen parameters (arch.args.freeze), which are in no group"
           if pattern != NORM_AND_BIAS and fnmatch.filter(frozen, pattern)
           else "no trainable parameter")  # fmt: skip
    raise UserError(
        f"{where}: {pattern!r} matches {why}; names look like "
        f"{', '.join(trainable[:3])} (fnmatch patterns, or {NORM_AND_BIAS!r} for "
        "every bias and normalisation-layer parameter)"
    )


def _patterns(entry: Any, where: str) -> list[str]:
    if not isinstance(entry, dict):
        raise UserError(f"{where}: {entry!r} is not valid; expected a mapping "
                        '{"params": [PATTERN, ...], OPTION: VALUE, ...}')  # fmt: skip
    if "params" not in entry:
        raise UserError(f"{where}.params: missing; each entry names its parameters with a list "
                        f"of parameter-name patterns (fnmatch) or {NORM_AND_BIAS!r}")  # fmt: skip
    patterns = entry["params"]
    if (
        not isinstance(patterns, list)
        or not patterns
        or not all(isinstance(pattern, str) for pattern in patterns)
    ):
        raise UserError(f"{where}.params: {patterns!r} is not valid; expected a non-empty list "
                        f"of parameter-name patterns (fnmatch) or {NORM_AND_BIAS!r}")  # fmt: skip
    return patterns


def check_options(
    groups: list[ParamGroup], entries: list, path: str, optimizer_class: type, args: dict
) -> None:
    """Each entry's options are arguments of `optimizer_class` and, over its `args`, values
    its constructor accepts (torch checks only the defaults' values, not a group's)."""
    accepted = [name for name in inspect.signature(optimizer_class).parameters if name != "params"]
    for index, entry in enumerate(entries):
        for key in entry:
            if key != "params" and key not in accepted:
                raise UserError(
                    f"{path}[{index}].{key}: {optimizer_class.__name__} takes no argument "
                    f"{key!r}{did_you_mean(str(key), accepted)}"
                )
    for group in groups:
        if not group.options:
            continue  # the optimizer's `args` alone, checked when it is built
        stand_in = torch.zeros(1, requires_grad=True)
        try:
            optimizer_class([stand_in], **{**args, **group.options})
        except Exception as error:  # whatever the constructor refuses, the options caused
            entries_of = ", ".join(group.selectors)
            raise UserError(
                f"{path}: {optimizer_class.__name__} rejects the options {group.options} of "
                f"the parameters {entries_of} select ({error_summary(error)})"
            ) from None


def build_param_groups(
    model: nn.Module, entries: list, path: str, optimizer_class: type, args: dict
) -> list[dict[str, Any]]:
    """The groups as `optimizer_class` takes them (`{"params": [...], **options}`), checked,
    and logged one line each."""
    groups = group_parameters(model, entries, path)
    check_options(groups, entries, path, optimizer_class, args)
    parameters = dict(model.named_parameters())
    for index, group in enumerate(groups):
        logger.info("%s: %s", path, describe(group, index, parameters))
    return [{"params": [parameters[n] for n in g.names], **g.options} for g in groups]


def describe(group: ParamGroup, index: int, parameters: dict[str, nn.Parameter]) -> str:
    """One log line: what the group sets, which patterns chose it, how much it holds
    (`parameters`: the model's, by name)."""
    count = sum(parameters[name].numel() for name in group.names)
    options = ", ".join(f"{k} {v}" for k, v in group.options.items()) or "the optimizer's args"
    chosen = f" ({', '.join(group.selectors)})" if group.selectors else " (no entry matches)"
    tensors = f"{len(group.names)} tensor" + ("s" if len(group.names) != 1 else "")
    return f"group {index}: {options}{chosen}: {tensors}, {count:,} parameters"
