"""The layers of the README's "Layout" table: every import of the framework points down it;
and the sizes the README promises (no file over 300 lines, no function over 40). Read from
the source with `ast`, so a new upward import or a long function fails here, not in a
reader's head."""

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from conftest import ROOT

# The README's table, top to bottom: a module imports from its own package or from below.
# Inside utils/, its packages are layers of their own, above the modules at utils/'s top level.
LAYERS = ["entry scripts", "builder", "trainer", "model", "data_loader", "logger", "base",
          "utils/search", "utils/run", "utils/checkpoint", "utils/config", "utils/distributed",
          "utils"]  # fmt: skip
ENTRY_SCRIPTS = {"train", "test", "tune", "new_project", "update_project"}


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name; None for what is not the framework's (torch)."""
    parts = module.split(".")
    if parts[0] in ENTRY_SCRIPTS:
        return "entry scripts"
    if "/".join(parts[:2]) in LAYERS:
        return "/".join(parts[:2])
    return parts[0] if parts[0] in LAYERS else None


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of each absolute import in `path` (relative ones stay in the package)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def framework_files(root: Path) -> list[Path]:
    """The entry scripts and every module of the layers' packages (not tests, benchmarks)."""
    packages = sorted({layer.split("/")[0] for layer in LAYERS[1:]})
    return sorted(root.glob("*.py")) + sorted(
        p for package in packages for p in (root / package).rglob("*.py")
    )


def upward_imports(root: Path = ROOT) -> list[str]:
    found = []
    for path in framework_files(root):
        name = path.relative_to(root).with_suffix("").as_posix().replace("/", ".")
        source = layer_of(name)
        for line, module in imported(path):
            target = layer_of(module)
            if target is not None and LAYERS.index(target) < LAYERS.index(source):
                found.append(f"{path.relative_to(root)}:{line}: {module} ({target} is above)")
    return found


def test_every_import_points_down_the_layers() -> None:
    assert upward_imports() == []


def test_the_layers_are_the_readme_s_table_in_its_order() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `([a-z_/]+)/`", readme.split("## Layout")[1], flags=re.MULTILINE)
    present = [layer for layer in LAYERS[1:] if (ROOT / layer).is_dir()]  # a copy may lack one
    assert [row for row in rows if row in LAYERS] == present


def test_an_upward_import_is_found(tmp_path: Path) -> None:
    """The check itself: a module of utils/ that imports the trainer is reported."""
    (tmp_path / "utils").mkdir()
    (tmp_path / "utils" / "helper.py").write_text("import os\nfrom trainer import Trainer\n")
    assert upward_imports(tmp_path) == ["utils/helper.py:2: trainer (trainer is above)"]


def test_a_package_of_utils_importing_one_above_it_is_found(tmp_path: Path) -> None:
    """Inside utils/, checkpoint/ may use config/ but not the run directory above it."""
    (tmp_path / "utils" / "checkpoint").mkdir(parents=True)
    (tmp_path / "utils" / "checkpoint" / "files.py").write_text(
        "from utils.config.keys import Key\nfrom utils.run.dirs import RunDirs\n"
    )
    assert upward_imports(tmp_path) == [
        "utils/checkpoint/files.py:2: utils.run.dirs (utils/run is above)"
    ]


MAX_FILE_LINES, MAX_FUNCTION_LINES = 300, 40


def oversized(root: Path = ROOT) -> list[str]:
    """The framework's files over `MAX_FILE_LINES` and functions (with their decorators) over
    `MAX_FUNCTION_LINES`."""
    found = []
    for path in framework_files(root):
        source, name = path.read_text(), path.relative_to(root)
        if (length := len(source.splitlines())) > MAX_FILE_LINES:
            found.append(f"{name}: {length} lines")
        for node in ast.walk(ast.parse(source, str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if (length := node.end_lineno - start + 1) > MAX_FUNCTION_LINES:
                    found.append(f"{name}:{start}: {node.name}() is {length} lines")
    return found


def test_no_file_is_over_300_lines_and_no_function_over_40() -> None:
    assert oversized() == []


def test_a_long_file_and_a_long_function_are_found(tmp_path: Path) -> None:
    (tmp_path / "utils").mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(40))
    (tmp_path / "utils" / "long.py").write_text(f"@staticmethod\ndef long():\n{body}" + "\n" * 259)
    assert oversized(tmp_path) == [
        "utils/long.py: 301 lines", "utils/long.py:1: long() is 42 lines"
    ]  # fmt: skip
