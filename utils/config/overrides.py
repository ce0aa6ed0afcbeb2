"""Command-line overrides (`-o KEY=VALUE`): a value set at a key path of the config."""

import copy
import re
from collections.abc import Iterable
from typing import Any

from utils.config.file import parse_value
from utils.errors import UserError, cut, shown


def apply_overrides(config: dict, overrides: Iterable[str]) -> dict:
    """Return a copy of `config` with each `KEY=VALUE` applied; validation comes later. KEY is
    a key path as error messages write it: dotted names, and `[N]` for an entry of a list
    (`trainer.hooks[0].args.decay`). A missing (or null) mapping on the way is created."""
    config = copy.deepcopy(config)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"-o {shown(item)}: expected KEY=VALUE, e.g. trainer.epochs=3")
        *parents, last = _key_parts(key)
        node, path = config, ""
        for part, after in zip(parents, [*parents, last][1:], strict=True):
            path = _step(node, part, path, key)
            if isinstance(node, dict) and node.get(part) is None:
                node[part] = [] if isinstance(after, int) else {}
            node = node[part]
        _step(node, last, path, key)
        node[last] = parse_value(text)
    return config


_KEY_PART = re.compile(r"([^.\[\]]+)((?:\[[0-9]+\])*)")


def _key_parts(key: str) -> list[str | int]:
    """`trainer.hooks[0].args` -> `["trainer", "hooks", 0, "args"]`."""
    parts: list[str | int] = []
    for piece in key.split("."):
        match = _KEY_PART.fullmatch(piece)
        if match is None:
            raise UserError(
                f"-o {cut(key)}: not a key path; expected names joined by dots, and [N] for an "
                "entry of a list, e.g. trainer.hooks[0].args.decay"
            )
        if match[1].isdigit():
            raise UserError(
                f"-o {cut(key)}: write an entry of a list as [{match[1]}], not .{match[1]}"
            )
        parts += [match[1], *map(int, re.findall(r"[0-9]+", match[2]))]
    return parts


def _step(node: Any, part: str | int, path: str, key: str) -> str:
    """The key path of `node[part]`, once `node` (at `path`) is shown to have a place `part`."""
    where = cut(path)  # (never empty: a key path starts with a name, and the config is a mapping)
    if isinstance(part, int):
        if not isinstance(node, list):
            raise UserError(f"-o {cut(key)}: {where} is not a list, so it has no entry [{part}]")
        if part >= len(node):
            entries = "1 entry" if len(node) == 1 else f"{len(node)} entries"
            raise UserError(
                f"-o {cut(key)}: {where} has {entries}, so no entry [{part}]; to add one, set "
                f"the whole list ({where}=[...])"
            )
        return f"{path}[{part}]"
    if not isinstance(node, dict):
        hint = f"; an entry of a list is {where}[N]" if isinstance(node, list) else ""
        raise UserError(
            f"-o {cut(key)}: {where} is not a mapping, so it has no key {shown(part)}{hint}"
        )
    return f"{path}.{part}" if path else part
