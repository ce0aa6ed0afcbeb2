"""The config keys the template knows: their types, defaults and valid values.

`utils.config.check.resolve_config` checks a config against these tables; the README's config
tables describe the same keys.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

REQUIRED = object()  # the default of a key that must be given


@dataclass(frozen=True)
class Key:
    """One config key: the types it accepts, its default, and an optional range check."""

    types: tuple[type, ...]
    default: Any = REQUIRED
    check: Callable[[Any], bool] | None = None
    valid: str = ""  # what a valid value looks like, for the error message


_NODE = (dict,)  # {"type": ..., "args": {...}}
SCHEDULER_KEYS = {  # beside "type" and "args" in an lr_scheduler node
    "interval": Key(
        (str, type(None)),
        None,
        lambda v: v in ("epoch", "step"),
        "'epoch', 'step' or null (OneCycleLR: step, others: epoch)",
    ),
}
METRIC_NODE_KEYS = {  # beside "type" and "args" in a metrics entry
    "name": Key((str, type(None)), None, lambda v: v is None or (v.isidentifier() and v != "loss"),
                "a name to log it under (an identifier, not 'loss'), or null for its type"),
}  # fmt: skip
OPTIMIZER_KEYS = {  # beside "type" and "args" in an optimizer node
    # Per-pattern options; the entries are checked against the model where the optimizer is
    # built (utils/config/param_groups.py).
    "param_groups": Key((list,), [], valid="a list of {params: [PATTERN, ...], OPTION: VALUE}"),
}
_COUNT = Key((int,), check=lambda v: v >= 1, valid="an integer >= 1")


def is_path_component(name: str) -> bool:
    """Whether `name` can be one directory inside another (a run's `name` under `save_dir`,
    a `--run-id`): never a way out of the run tree, and one the file system accepts."""
    return (
        name not in ("", ".", "..")
        and "/" not in name
        and "\0" not in name
        and len(name.encode("utf-8", "surrogatepass")) <= 255
    )


TOP_LEVEL_KEYS = {
    "name": Key(
        (str,),
        check=is_path_component,
        valid="a directory name: not '', '.' or '..', without '/', at most 255 bytes",
    ),
    "n_gpu": Key((int,), 1, lambda v: v >= 0, "an integer >= 0"),
    # Below 2**32 every generator (Python's, NumPy's, torch's) takes the seed as it is;
    # NumPy would reduce a larger one modulo 2**32, giving two seeds one stream.
    "seed": Key(
        (int, type(None)),
        None,
        lambda v: 0 <= v < 2**32,
        "an integer >= 0 and < 2**32, or null (a random one)",
    ),
    "arch": Key(_NODE),  # a node, or a mapping of model names to nodes
    "data_loader": Key(_NODE),
    "optimizer": Key(_NODE),  # a node (for every model), or a mapping of model names to nodes
    "loss": Key((str, dict, type(None)), None),
    "metrics": Key((list,), []),
    "lr_scheduler": Key((dict, type(None)), None),
    "trainer": Key((dict,)),
    "test": Key((dict,), {}),  # test.py's options
    "code_version": Key((dict, type(None)), None),  # written by train.py: git commit, dirty
}

TRAINER_KEYS = {
    "type": Key((str,), "Trainer"),
    "hooks": Key((list,), []),
    "epochs": _COUNT,
    "save_dir": Key((str,), "saved/", lambda v: v != "", "a directory, such as 'saved/'"),
    "save_period": Key((int,), 1, lambda v: v >= 1, "an integer >= 1"),
    "keep_last": Key(
        (int, type(None)), None, lambda v: v is None or v >= 1, "an integer >= 1 or null"
    ),
    "verbosity": Key((int,), 2, lambda v: v in (0, 1, 2), "0, 1 or 2"),
    "monitor": Key(
        (str,), "off", lambda v: parse_monitor(v) is not None, "'off', 'min METRIC' or 'max METRIC'"
    ),
    "early_stop": Key((int,), 0, lambda v: v >= 0, "an integer >= 0 (0 turns it off)"),
    "tensorboard": Key((bool,), True),
    "log_images": Key((bool,), True),
    "metrics_csv": Key((bool,), True),
    "len_epoch": Key(
        (int, type(None)), None, lambda v: v is None or v >= 1, "an integer >= 1 or null"
    ),
    "log_step": Key((int,), 10, lambda v: v >= 1, "an integer >= 1"),
    "progress_bar": Key((bool,), True),
    "amp": Key(
        (str, bool), False, lambda v: v in ("bf16", "fp16", False), "'bf16', 'fp16' or false"
    ),
    "accumulate_steps": Key((int,), 1, lambda v: v >= 1, "an integer >= 1"),
    "clip_grad_norm": Key(
        (int, float, type(None)), None, lambda v: v > 0, "a number > 0 or null (no clipping)"
    ),
    "compile": Key(
        (bool, dict), False, valid="true, false or a mapping of torch.compile arguments"
    ),
    "channels_last": Key((bool,), False),
    "cudnn_benchmark": Key((bool,), False),
    "on_nonfinite": Key(
        (str, type(None)),
        None,
        lambda v: v in ("stop", "skip"),
        "'stop', 'skip' or null (no check: no host sync per step)",
    ),
    "max_skipped": Key((int,), 10, lambda v: v >= 1, "an integer >= 1"),
    "strategy": Key(
        (str, type(None)),
        None,
        lambda v: v in ("ddp", "fsdp"),
        "'ddp', 'fsdp' or null (under torchrun: 'ddp')",
    ),
    "save_every_steps": Key(
        (int, type(None)), None, lambda v: v >= 1, "an integer >= 1 or null (only per epoch)"
    ),
}


TEST_KEYS = {
    # A report of logger/reports/ (checked where it is looked up, builder/report.py)
    "report": Key((str,), "auto", valid="'auto', 'none' or a report's name"),
}


def parse_monitor(monitor: str) -> tuple[str, str] | None:
    """`"min val_loss"` -> `("min", "val_loss")`; `"off"` -> `("off", "")`; invalid -> None."""
    if monitor == "off":
        return ("off", "")
    mode, _, metric = monitor.partition(" ")
    if mode in ("min", "max") and metric and " " not in metric:
        return (mode, metric)
    return None


# Beyond this, more loader processes only cost memory; 32 keeps a config that asks for up to
# 32 valid on any machine, and a machine with more cores may use them all.
MAX_WORKERS = max(32, os.cpu_count() or 1)

_FLAG = Key((bool,))  # "true or false": YAML 1.2 and JSON read `no` and "false" as strings
LOADER_ARGS = {  # arguments the template's data loaders share, checked where a config gives them
    "batch_size": Key(
        (int,), check=lambda v: 1 <= v <= 2**31 - 1, valid="an integer from 1 to 2**31 - 1"
    ),
    "validation_split": Key(
        (int, float),
        check=lambda v: 0 <= v < 1 if isinstance(v, float) else v >= 0,
        valid="a fraction in [0, 1) or a number of samples >= 0",
    ),
    "num_workers": Key(
        (int,),
        check=lambda v: 0 <= v <= MAX_WORKERS,
        valid=f"an integer from 0 to {MAX_WORKERS} (0: load in the training process)",
    ),
    "shuffle": _FLAG,
    "training": _FLAG,
    "drop_last": _FLAG,
    "download": _FLAG,
    "device_resident": _FLAG,
    "pin_memory": Key((bool, type(None)), valid="true or false, or null (true with a GPU)"),
}

METRIC_ARGS = {  # checks on the arguments of model/metric.py's metrics, before any is built
    "top_k_acc": {"k": _COUNT},
}
