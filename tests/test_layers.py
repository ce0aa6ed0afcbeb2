"""The layers of the README's "Layout" table: every import of the framework points down it.
Read from the source with `ast`, so a new upward import fails here, not in a reader's head."""

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


def upward_imports(root: Path = ROOT) -> list[str]:
    files = sorted(root.glob("*.py"))
    packages = sorted({layer.split("/")[0] for layer in LAYERS[1:]})
    files += sorted(p for package in packages for p in (root / package).rglob("*.py"))
    found = []
    for path in files:
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
