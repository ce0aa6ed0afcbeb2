"""The config keys the template knows (the README's config tables): their type hints, which
`resolve_config` checks each value against with pydantic, defaults and valid values."""

import os
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Interval, MinLen, Predicate

REQUIRED = object()  # the default of a key that must be given


@dataclass(frozen=True)
class Key:
    """One config key: the type hint its value must fit (strictly: true is not 1), its
    default, and what a valid value looks like, for the error message."""

    hint: Any
    default: Any = REQUIRED
    valid: str = ""


def Count(least: int) -> Any:
    """An integer >= `least`."""
    return Annotated[int, Ge(least)]


SCHEDULER_KEYS = {  # beside "type" and "args" in an lr_scheduler node
    "interval": Key(Literal["epoch", "step"] | None, None,
                    "'epoch', 'step' or null (OneCycleLR: step, others: epoch)"),
}  # fmt: skip
METRIC_NODE_KEYS = {  # beside "type" and "args" in a metrics entry
    "name": Key(Annotated[str, Predicate(lambda v: v.isidentifier() and v != "loss")] | None,
                None, "a name to log it under (an identifier, not 'loss'), or null for its type"),
}  # fmt: skip
OPTIMIZER_KEYS = {  # beside "type" and "args" in an optimizer node
    # Per-pattern options; the entries are checked against the model where the optimizer is
    # built (utils/config/param_groups.py).
    "param_groups": Key(list, [], valid="a list of {params: [PATTERN, ...], OPTION: VALUE}"),
}


def is_path_component(name: str) -> bool:
    """Whether `name` can be one directory inside another (a run's `name` under `save_dir`,
    a `--run-id`): never a way out of the run tree, and one the file system accepts."""
    return (
        name not in ("", ".", "..")
        and "/" not in name
        and "\0" not in name
        and len(name.encode("utf-8", "surrogatepass")) <= 255
    )


def parse_monitor(monitor: str) -> tuple[str, str] | None:
    """`"min val_loss"` -> `("min", "val_loss")`; `"off"` -> `("off", "")`; invalid -> None."""
    if monitor == "off":
        return ("off", "")
    mode, _, metric = monitor.partition(" ")
    if mode in ("min", "max") and metric and " " not in metric:
        return (mode, metric)
    return None


TOP_LEVEL_KEYS = {
    "name": Key(Annotated[str, Predicate(is_path_component)],
                valid="a directory name: not '', '.' or '..', without '/', at most 255 bytes"),
    "n_gpu": Key(Count(0), 1, "an integer >= 0"),
    # Below 2**32 every generator (Python's, NumPy's, torch's) takes the seed as it is;
    # NumPy would reduce a larger one modulo 2**32, giving two seeds one stream.
    "seed": Key(Annotated[int, Interval(ge=0, lt=2**32)] | None, None,
                "an integer >= 0 and < 2**32, or null (a random one)"),
    "arch": Key(dict),  # a node, or a mapping of model names to nodes
    "data_loader": Key(dict),  # {"type": ..., "args": {...}}
    "optimizer": Key(dict),  # a node (for every model), or a mapping of model names to nodes
    "loss": Key(str | dict | None, None),
    "metrics": Key(list, []),
    "lr_scheduler": Key(dict | None, None),
    "trainer": Key(dict),
    "test": Key(dict, {}),  # test.py's options
    "code_version": Key(dict | None, None),  # written by train.py: git commit, dirty
}  # fmt: skip

TRAINER_KEYS = {
    "type": Key(str, "Trainer"),
    "hooks": Key(list, []),
    "epochs": Key(Count(1), valid="an integer >= 1"),
    "save_dir": Key(Annotated[str, MinLen(1)], "saved/", "a directory, such as 'saved/'"),
    "save_period": Key(Count(1), 1, "an integer >= 1"),
    "keep_last": Key(Count(1) | None, None, "an integer >= 1 or null"),
    "verbosity": Key(Literal[0, 1, 2], 2, "0, 1 or 2"),
    "monitor": Key(Annotated[str, Predicate(lambda v: parse_monitor(v) is not None)], "off",
                   "'off', 'min METRIC' or 'max METRIC'"),
    "early_stop": Key(Count(0), 0, "an integer >= 0 (0 turns it off)"),
    "tensorboard": Key(bool, True),
    "log_images": Key(bool, True),
    "metrics_csv": Key(bool, True),
    "len_epoch": Key(Count(1) | None, None, "an integer >= 1 or null"),
    "log_step": Key(Count(1), 10, "an integer >= 1"),
    "progress_bar": Key(bool, True),
    "amp": Key(Literal["bf16", "fp16", False], False, "'bf16', 'fp16' or false"),
    "accumulate_steps": Key(Count(1), 1, "an integer >= 1"),
    "clip_grad_norm": Key(Annotated[float, Gt(0)] | None, None,
                          "a number > 0 or null (no clipping)"),
    "compile": Key(bool | dict, False, "true, false or a mapping of torch.compile arguments"),
    "channels_last": Key(bool, False),
    "cudnn_benchmark": Key(bool, False),
    "on_nonfinite": Key(Literal["stop", "skip"] | None, None,
                        "'stop', 'skip' or null (no check: no host sync per step)"),
    "max_skipped": Key(Count(1), 10, "an integer >= 1"),
    "strategy": Key(Literal["ddp", "fsdp"] | None, None,
                    "'ddp', 'fsdp' or null (under torchrun: 'ddp')"),
    "save_every_steps": Key(Count(1) | None, None, "an integer >= 1 or null (only per epoch)"),
}  # fmt: skip

TEST_KEYS = {
    # A report of logger/reports/ (checked where it is looked up, builder/report.py)
    "report": Key(str, "auto", valid="'auto', 'none' or a report's name"),
}

# Beyond this, more loader processes only cost memory; 32 keeps a config that asks for up to
# 32 valid on any machine, and a machine with more cores may use them all.
MAX_WORKERS = max(32, os.cpu_count() or 1)

_FLAG = Key(bool)  # "true or false": YAML 1.2 and JSON read `no` and "false" as strings
LOADER_ARGS = {  # arguments the template's data loaders share, checked where a config gives them
    "batch_size": Key(Annotated[int, Interval(ge=1, le=2**31 - 1)],
                      valid="an integer from 1 to 2**31 - 1"),
    "validation_split": Key(Annotated[float, Interval(ge=0, lt=1)] | Count(0),
                            valid="a fraction in [0, 1) or a number of samples >= 0"),
    "num_workers": Key(Annotated[int, Interval(ge=0, le=MAX_WORKERS)], valid=f"an integer from 0 "
                       f"to {MAX_WORKERS} (0: load in the training process)"),
    "shuffle": _FLAG,
    "training": _FLAG,
    "drop_last": _FLAG,
    "download": _FLAG,
    "device_resident": _FLAG,
    "pin_memory": Key(bool | None, valid="true or false, or null (true with a GPU)"),
}  # fmt: skip

METRIC_ARGS = {  # checks on the arguments of model/metric.py's metrics, before any is built
    "top_k_acc": {"k": Key(Count(1), valid="an integer >= 1")},
}
