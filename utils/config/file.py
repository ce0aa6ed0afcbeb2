"""Reading a config file, and the values of command-line overrides, into plain data within bounds.

A config may come from anywhere (a colleague, a tutorial, a download), so reading it stays
cheap whatever it holds: only a regular file of at most `MAX_FILE_BYTES` is read, and what
it holds may expand (YAML aliases share values) to at most `MAX_VALUES` values, nested at
most `MAX_DEPTH` deep, with no value inside itself. YAML is read with YAML 1.2 scalars, in
files and overrides alike.
"""

import json
import math
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from utils.errors import UserError, cut, shown

MAX_FILE_BYTES = 1 << 20  # a config is a few kB; 1 MiB leaves room for long lists of numbers
MAX_VALUES = 100_000  # mappings, lists and scalars, counted with YAML aliases expanded
MAX_DEPTH = 32  # levels of nesting; the code that walks a config recurses, well within limits


class _Refused(Exception):
    """What is wrong with the text being read; the caller says which file or override."""


_MERGE = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars, no key written twice, and merges (`<<`) bounded.

    YAML 1.1 reads `off`, `no` and `yes` as booleans, `1:30` as 90 (base 60), `1_000` as
    1000, `017` as octal 15 and `2024-01-01` as a date, and requires a dot in `1e-3`. Here,
    as in YAML 1.2's core schema and JSON, booleans are only true/false, integers are decimal
    (or `0o17`, `0x1F`), `1e-3` is a float, and every other plain scalar is a string.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.flattened: set[int] = set()

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """Refuse a key written twice in one mapping (YAML would keep the last one silently);
        keys that a merge (`<<: *base`) brings in may be overridden, as YAML intends."""
        if id(node) not in self.flattened:  # later calls see the merged keys too
            self.flattened.add(id(node))
            seen = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE:
                    key = self.construct_object(key_node)
                    if key in seen:
                        raise _Refused(
                            f"the key {shown(key)} is written twice in one mapping (line "
                            f"{key_node.start_mark.line + 1}); keep one"
                        )
                    seen.add(key)
        super().flatten_mapping(node)
        # PyYAML before 6.0.2 repeats merged keys, so chained merges double at every level.
        if len(node.value) > MAX_VALUES:
            raise _Refused(f"more than {MAX_VALUES} values once merge keys (<<) are expanded")


_Loader.yaml_implicit_resolvers = {  # keep null and merge; YAML 1.2 bool, int, float below
    first: [(tag, regexp) for tag, regexp in resolvers if tag in ("tag:yaml.org,2002:null", _MERGE)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9]+[eE][-+]?[0-9]+"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    """A YAML 1.2 integer: `017` is 17 (1.1 reads octal), `0o17` 15, `0x1F` 31."""
    text = loader.construct_scalar(node)
    bases = {"0o": 8, "0x": 16}
    return int(text[2:], bases[text[:2]]) if text[:2] in bases else int(text, 10)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load_config_file(path: str | Path) -> dict:
    path = Path(path)
    if path.suffix not in (".json", ".yaml", ".yml"):
        raise UserError(f"config file {path}: unknown extension; valid: .json, .yaml, .yml")
    kind = path.suffix[1:].upper()
    try:
        text = _read_text(path)
        if kind == "JSON":
            config = json.loads(text, object_pairs_hook=_unique_keys)
        else:
            config = yaml.load(text, _Loader)
        _check_shape(config)
    except _Refused as error:
        raise UserError(f"config file {path}: {error}") from None
    except RecursionError:
        raise UserError(
            f"config file {path}: nested too deeply; at most {MAX_DEPTH} levels"
        ) from None
    except (ValueError, yaml.YAMLError) as error:  # json.JSONDecodeError is a ValueError
        detail = cut(" ".join(_syntax_error(error).split()), 300)
        raise UserError(f"config file {path}: not valid {kind}: {detail}") from None
    if not isinstance(config, dict):
        raise UserError(f"config file {path}: the top level must be a mapping of keys")
    return config


def _syntax_error(error: Exception) -> str:
    """PyYAML's error as `line L, column C: problem (context)`, without its quote of the
    line and the name of its input stream; any other error as it says itself."""
    mark = getattr(error, "problem_mark", None)
    if not isinstance(error, yaml.MarkedYAMLError) or mark is None:
        return str(error)
    context = f" ({error.context})" if error.context else ""
    return f"line {mark.line + 1}, column {mark.column + 1}: {error.problem}{context}"


def _read_text(path: Path) -> str:
    """The file's text. Only a regular file is read: a device such as /dev/zero never ends,
    and a FIFO blocks until someone writes (opened non-blocking, it is refused at once)."""
    try:
        handle = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError) as error:
        raise _Refused(f"cannot be read ({getattr(error, 'strerror', None) or error})") from None
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise _Refused("not a regular file; give the path of a .json or .yaml file")
        with os.fdopen(handle, "rb", closefd=False) as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise _Refused(f"cannot be read ({error.strerror})") from None
    finally:
        os.close(handle)
    if len(data) > MAX_FILE_BYTES:
        raise _Refused(f"larger than {MAX_FILE_BYTES >> 10} KiB; a config holds settings, not data")
    try:
        return data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is dropped
    except UnicodeDecodeError as error:
        raise _Refused(
            f"not UTF-8 text (byte {data[error.start]:#04x} at offset {error.start}); "
            "save it as UTF-8"
        ) from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object, refused when a key appears twice (json keeps the last one silently)."""
    mapping = {}
    for key, value in pairs:
        if key in mapping:
            raise _Refused(f"the key {shown(key)} is written twice in one object; keep one")
        mapping[key] = value
    return mapping


def parse_value(text: str) -> Any:
    """Parse a command-line override value as YAML, as in a file (`3`, `1e-3`, `true`, `null`,
    `[1, 2]`); text that is not a YAML value stays a string."""
    try:
        return yaml.load(text, _Loader)
    except _Refused as error:
        raise UserError(f"-o value {shown(text)}: {error}") from None
    except (yaml.YAMLError, ValueError, RecursionError):
        return text


def key_text(key: Any) -> str:
    """A mapping key as a key path shows it: a string as written (cut short), else its repr."""
    return cut(key) if isinstance(key, str) else shown(key)


def data_problems(data: Any) -> list[str]:
    """Why `data` is not a tree of JSON values: its shape problem, if any (then nothing else
    can be walked), else every value problem."""
    try:
        _check_shape(data)
    except _Refused as problem:
        return [str(problem)]
    return list(_value_problems(data))


def _check_shape(data: Any) -> None:
    """Refuse what is not a tree: a value inside itself (a recursive alias), a "billion
    laughs" alias bomb, nesting deeper than `MAX_DEPTH`."""
    _expanded_size(data, (), sizes={}, open_ids=set())


def _expanded_size(
    value: Any, path: tuple[str, ...], sizes: dict[int, int], open_ids: set[int]
) -> int:
    """How many values `value` holds, shared ones counted at every place, each visited once
    (time follows the file, not its expansion). `sizes`: id -> size of each node visited;
    `open_ids`: the nodes on the path to `value`."""
    if not isinstance(value, dict | list):
        return 1
    if id(value) in sizes:
        return sizes[id(value)]
    if id(value) in open_ids:
        raise _Refused(f"{_where(path)}: holds itself (a recursive YAML alias); a config is a tree")
    if len(path) >= MAX_DEPTH:
        raise _Refused(f"{_where(path)}: nested more than {MAX_DEPTH} levels deep")
    open_ids.add(id(value))
    if isinstance(value, dict):
        items = ((f".{key_text(key)}", child) for key, child in value.items())
    else:
        items = ((f"[{index}]", child) for index, child in enumerate(value))
    total = 1
    for part, child in items:
        total += _expanded_size(child, (*path, part), sizes, open_ids)
        if total > MAX_VALUES:
            raise _Refused(
                f"{_where(path)}: more than {MAX_VALUES} values once YAML aliases are expanded; "
                "a config holds settings, not data"
            )
    open_ids.discard(id(value))
    sizes[id(value)] = total
    return total


def _where(path: tuple[str, ...]) -> str:
    return "".join(path).removeprefix(".") or "the top level"


def walk(node: Any, path: str = "") -> Iterable[tuple[str, Any]]:
    """Every value of a tree (`_check_shape` has passed), each mapping and list before what it
    holds, with its key path (`optimizer.args.betas[1]`)."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key_text(key)}" if path else key_text(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")


def _value_problems(data: Any) -> Iterable[str]:
    """Why values in `data` are not JSON data the template can use: a key that is not a
    string, a value JSON has no type for (a YAML date, `!!binary`, `!!set`), an integer
    beyond 64 bits (no float or tensor holds it), a non-finite number, a NUL character."""
    for path, node in walk(data):
        if isinstance(node, dict):
            for key in node:
                if not isinstance(key, str):
                    child = f"{path}.{key_text(key)}" if path else key_text(key)
                    yield f"{child}: the key {shown(key)} is not valid; expected a string key"
        elif isinstance(node, str):
            if "\x00" in node:
                yield f"{path}: {shown(node)} is not valid; a string may not hold a NUL character"
        elif isinstance(node, float):
            if not math.isfinite(node):
                yield f"{path}: {shown(node)} is not valid; expected a finite number"
        elif isinstance(node, int):
            if not -(2**63) <= node < 2**63:
                yield f"{path}: {shown(node)} is not valid; expected an integer within ±2**63"
        elif node is not None and not isinstance(node, list):
            yield (
                f"{path}: {shown(node)} is not valid; expected a JSON value: a mapping, list, "
                "string, number, true, false or null"
            )
