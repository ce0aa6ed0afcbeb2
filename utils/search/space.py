"""The search file of `tune.py`: which config keys to search, over what, and how. Checked as
plain data, without Ray, so that every mistake is one line before Ray starts. A space's key
is a dotted config key, and a trial gets its value exactly as `-o KEY=VALUE` would set it."""

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge, Gt, Predicate

from utils.config.argument_types import fits
from utils.config.file import load_config_file
from utils.config.keys import Count, parse_monitor
from utils.errors import UserError, did_you_mean, one_line, shown

SEARCH_KEYS = ("space", "num_samples", "max_concurrent_trials", "scheduler",
               "resources_per_trial", "max_failures")  # fmt: skip
SPACE_KINDS = {  # kind -> what its value must be, for the error message
    "choice": "a non-empty list of values, one picked at random per trial",
    "grid": "a non-empty list of values, each tried (in every one of num_samples repeats)",
    "uniform": "[low, high], numbers with low < high; a float drawn uniformly",
    "loguniform": "[low, high], numbers with 0 < low < high; a float drawn uniformly in log space",
    "randint": "[low, high], integers with low < high; an integer from low to high - 1",
}
NUMBER = Annotated[float, Predicate(math.isfinite)]  # (a YAML file may hold .inf)
SCHEDULER_ARGS = {  # ASHA's arguments a search file may set; the others come from the config
    "grace_period": (Count(1),
                     "an integer >= 1 (epochs every trial runs before it may be stopped)"),
    "reduction_factor": (Annotated[NUMBER, Gt(1)],
                         "a number > 1 (1/reduction_factor of the trials go on at each rung)"),
    "brackets": (Count(1), "an integer >= 1"),
}  # fmt: skip
COUNTS = {"num_samples": 1, "max_concurrent_trials": 1, "max_failures": 0}  # the least of each
SET_BY_TUNE = ("metric", "mode", "time_attr", "max_t")  # from trainer.monitor and epochs
_KEY_PART = re.compile(r"[^\W\d]\w*(?:\[[0-9]+\])*")  # a name, then list indices
FIXED_IN_A_SEARCH = {  # config keys every trial shares, and why
    "name": "it names the search's run directories",
    "trainer.save_dir": "every trial's run is in the search directory",
    "trainer.monitor": "it is what trials are compared on",
    "trainer.save_period": "every trial saves each epoch, for ASHA's stops and --resume",
    "trainer.progress_bar": "trials show no progress bar",
}


@dataclass(frozen=True)
class Space:
    """One searched config key: `kind` (a `SPACE_KINDS` name) over `values` (the choices,
    or the bounds `low, high`)."""

    key: str
    kind: str
    values: tuple

    def edge_values(self) -> list[Any]:
        """Values a trial may get that bound what it can get: every choice, else both ends
        (randint's high is exclusive; uniform and loguniform draw floats, also between bounds
        written as integers). Checking a config with each covers the space."""
        if self.kind in ("choice", "grid"):
            return list(self.values)
        low, high = self.values
        return [low, high - 1] if self.kind == "randint" else [float(low), float(high)]


@dataclass(frozen=True)
class Search:
    """A whole search file, checked, with `load_search`'s defaults filled in."""

    spaces: tuple[Space, ...]
    num_samples: int
    max_concurrent_trials: int | None
    scheduler: str
    scheduler_args: dict[str, Any]
    resources_per_trial: dict[str, float]
    max_failures: int

    def as_dict(self) -> dict[str, Any]:
        """Plain data, as a search file would write it (what a resumed search compares)."""
        return {
            "space": {space.key: {space.kind: list(space.values)} for space in self.spaces},
            "num_samples": self.num_samples,
            "max_concurrent_trials": self.max_concurrent_trials,
            "scheduler": {"type": self.scheduler, "args": self.scheduler_args},
            "resources_per_trial": self.resources_per_trial,
            "max_failures": self.max_failures,
        }


class _Refused(Exception):
    """One problem of a search file; `load_search` reports all of them together."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")


def load_search(path: str | Path, check: Callable[[list[str]], None] | None = None) -> Search:
    """Read and check a search file (JSON or YAML, read like a config file); every problem
    of it is reported at once, as a config's are, with the spaces whose values the config
    refuses (`check(overrides)` raises `UserError` for those: `refused_values`)."""
    data = load_config_file(path)
    problems = [f"{key}: unknown key{did_you_mean(str(key), SEARCH_KEYS)}"
                for key in data if key not in SEARCH_KEYS]  # fmt: skip

    def checked(part: Callable[..., Any], default: Any, *args: Any) -> Any:
        try:
            return part(*args)
        except _Refused as problem:
            problems.append(str(problem))
            return default

    space = data.get("space")
    if not isinstance(space, dict) or not space:
        example = "optimizer.args.lr: {loguniform: [1.0e-4, 1.0e-2]}"
        problems.append(f"space: missing or empty; expected a mapping of dotted config keys "
                        f"to spaces, e.g. {example}")  # fmt: skip
        space = {}
    spaces = tuple(checked(_space, None, key, value) for key, value in space.items())
    problems += [f"{key}: {shown(data[key])} is not valid; expected an integer >= {least}"
                 for key, least in COUNTS.items()
                 if data.get(key) is not None and not fits(Count(least), data[key])]  # fmt: skip
    scheduler, scheduler_args = checked(_scheduler, ("ASHA", {}), data.get("scheduler"))
    resources = checked(_resources, {}, data.get("resources_per_trial"))
    if check is not None:
        problems += refused_values([each for each in spaces if each is not None], check)
    if problems:
        raise UserError(f"search file {path}: {one_line(problems)}")
    return Search(
        spaces=spaces,
        num_samples=data.get("num_samples") or 1,
        max_concurrent_trials=data.get("max_concurrent_trials"),
        scheduler=scheduler,
        scheduler_args=scheduler_args,
        resources_per_trial=resources,
        max_failures=data.get("max_failures") or 0,
    )


def _space(key: Any, value: Any) -> Space:
    where = f"space.{key}"
    parts = key.split(".") if isinstance(key, str) else []
    if not parts or not all(_KEY_PART.fullmatch(part) for part in parts):
        raise _Refused(where, "expected a dotted config key of names, and [N] for an entry of a "
                       "list, e.g. optimizer.args.lr or trainer.hooks[0].args.decay")  # fmt: skip
    for fixed, why in FIXED_IN_A_SEARCH.items():
        if f"{fixed}.".startswith(f"{key}.") or key.startswith(f"{fixed}."):
            raise _Refused(where, f"a search cannot vary {fixed} ({why}); set it in the config")
    if not isinstance(value, dict) or len(value) != 1:
        raise _Refused(
            where, f"{shown(value)} is not valid; expected one of {{{', '.join(SPACE_KINDS)}: ...}}"
        )
    (kind, values), = value.items()  # fmt: skip
    if kind not in SPACE_KINDS:
        suggestion = did_you_mean(str(kind), SPACE_KINDS)
        raise _Refused(where, f"unknown space kind {shown(kind)}{suggestion}")
    expected = f"{kind} takes {SPACE_KINDS[kind]}"
    if not isinstance(values, list) or not values:
        raise _Refused(where, f"{shown(values)} is not valid; {expected}")
    if kind in ("uniform", "loguniform", "randint"):
        bound = int if kind == "randint" else NUMBER
        valid = len(values) == 2 and all(fits(bound, v) for v in values)
        if not valid or values[0] >= values[1] or (kind == "loguniform" and values[0] <= 0):
            raise _Refused(where, f"{shown(values)} is not valid; {expected}")
    return Space(key, kind, tuple(values))


def _scheduler(node: Any) -> tuple[str, dict]:
    if node is None:
        return "ASHA", {}
    if not isinstance(node, dict) or set(node) - {"type", "args"}:
        raise _Refused(
            "scheduler",
            f"{shown(node)} is not valid; expected {{type: ASHA or FIFO, args: {{...}}}}",
        )
    kind, args = node.get("type", "ASHA"), node.get("args") or {}
    if kind not in ("ASHA", "FIFO"):
        raise _Refused("scheduler.type", f"{shown(kind)} is not valid; expected 'ASHA' or 'FIFO'")
    if not isinstance(args, dict) or (kind == "FIFO" and args):
        expected = "no arguments for FIFO" if kind == "FIFO" else "a mapping"
        raise _Refused("scheduler.args", f"{shown(args)} is not valid; expected {expected}")
    for name, value in args.items():
        where = f"scheduler.args.{name}"
        if name in SET_BY_TUNE:
            why = "metric and mode from trainer.monitor, time_attr epoch, max_t trainer.epochs"
            raise _Refused(where, f"set by tune.py ({why}); remove it")
        if name not in SCHEDULER_ARGS:
            raise _Refused(where, f"unknown argument{did_you_mean(str(name), SCHEDULER_ARGS)}")
        hint, valid = SCHEDULER_ARGS[name]
        if not fits(hint, value):
            raise _Refused(where, f"{shown(value)} is not valid; expected {valid}")
    return kind, dict(args)


def _resources(node: Any) -> dict[str, float]:
    resources = {"cpu": 1, "gpu": 0}
    if node is None:
        return resources
    if not isinstance(node, dict):
        problem = f"{shown(node)} is not valid; expected {{cpu: N, gpu: N}}"
        raise _Refused("resources_per_trial", problem)
    for name, value in node.items():
        where = f"resources_per_trial.{name}"
        if name not in resources:
            suggestion = did_you_mean(str(name), resources)
            raise _Refused(where, f"unknown key{suggestion}; valid: cpu, gpu")
        if not fits(Annotated[NUMBER, Gt(0) if name == "cpu" else Ge(0)], value):
            valid = "a number > 0" if name == "cpu" else "a number >= 0"
            raise _Refused(where, f"{shown(value)} is not valid; expected {valid}")
        resources[name] = value
    return resources


def monitored(config: dict) -> tuple[str, str]:
    """The metric a search optimises and its mode, from the resolved config's
    `trainer.monitor`: "min val_loss" -> ("val_loss", "min")."""
    mode, metric = parse_monitor(config["trainer"]["monitor"])
    if mode == "off":
        raise UserError(
            "trainer.monitor: 'off', but a search needs a monitored value to compare trials; "
            "set it, e.g. -o 'trainer.monitor=min val_loss'"
        )
    return metric, mode


def override(key: str, value: Any) -> str:
    """`-o` text that sets `key` to `value`: JSON is YAML, so the value reads back as it is."""
    return f"{key}={json.dumps(value)}"


def refused_values(spaces: list[Space], check: Callable[[list[str]], None]) -> list[str]:
    """Run `check` (which raises `UserError` for a config it refuses) on the overrides that
    set each space to each of its `edge_values`, the others left as the config has them:
    each space's first refused value, as a problem of the search file."""
    problems = []
    for space in spaces:
        for value in space.edge_values():
            try:
                check([override(space.key, value)])
            except UserError as error:
                drawn = space.kind in ("uniform", "loguniform") and float not in map(
                    type, space.values
                )
                note = f" ({space.kind} draws floats; randint draws integers)" if drawn else ""
                problems.append(
                    f"space.{space.key}: the value {shown(value)}{note} is refused: {error}"
                )
                break
    return problems


def check_searched_lr(search: Search, config: dict, path: str | Path) -> None:
    """Refuse a searched `optimizer.args.lr` that the config's schedule overrides: OneCycleLR
    and CyclicLR set every step's rate from their own arguments, so every trial would train
    alike while trials.csv showed an "optimal" lr."""
    node = config["lr_scheduler"]
    cyclic = {"OneCycleLR": "max_lr", "CyclicLR": "base_lr and max_lr"}
    if not isinstance(node, dict) or node.get("type") not in cyclic:
        return
    if any(space.key == "optimizer.args.lr" for space in search.spaces):
        raise UserError(
            f"search file {path}: space.optimizer.args.lr: {node['type']} sets the learning "
            f"rate from lr_scheduler.args.{cyclic[node['type']]} at every step, so the "
            "optimizer's lr changes nothing; search lr_scheduler.args.max_lr instead"
        )


def most_epochs(search: Search, config: dict) -> int:
    """The most epochs a trial can run: `trainer.epochs`, or the largest it is searched over."""
    spaces = [space for space in search.spaces if space.key == "trainer.epochs"]
    return max(spaces[0].edge_values()) if spaces else config["trainer"]["epochs"]


def ray_spaces(search: Search) -> dict[str, Any]:
    """Ray Tune's search space objects for the search file's spaces, by dotted key."""
    from ray import tune

    makers = {
        "choice": lambda values: tune.choice(list(values)),
        "grid": lambda values: tune.grid_search(list(values)),
        "uniform": lambda bounds: tune.uniform(*bounds),
        "loguniform": lambda bounds: tune.loguniform(*bounds),
        "randint": lambda bounds: tune.randint(*bounds),  # high exclusive, as in the file
    }
    return {space.key: makers[space.kind](space.values) for space in search.spaces}
