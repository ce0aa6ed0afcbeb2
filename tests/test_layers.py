"""The layers of the README's "Layout" table: every import of the framework points down it.
Read from the source with `ast`, so a new upward import fails here, not in a reader's head."""

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from conftest import ROOT

# The README's table, top to bottom: a module imports from its own package or from below.
LAYERS = ["entry scripts", "builder", "trainer", "model", "data_loader", "logger", "base", "utils"]
ENTRY_SCRIPTS = {"train", "test", "tune", "new_project", "update_project"}


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name; None for what is not the framework's (torch)."""
    top = module.split(".")[0]
    return "entry scripts" if top in ENTRY_SCRIPTS else top if top in LAYERS else None


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of each absolute import in `path` (relative ones stay in the package)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def upward_imports(root: Path = ROOT) -> list[str]:
    files = sorted(root.glob("*.py"))
    files += sorted(p for layer in LAYERS[1:] for p in (root / layer).rglob("*.py"))
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
    rows = re.findall(r"^\| `([a-z_]+)/`", readme.split("## Layout")[1], flags=re.MULTILINE)
    assert [row for row in rows if row in LAYERS] == LAYERS[1:]


def test_an_upward_import_is_found(tmp_path: Path) -> None:
    """The check itself: a module of utils/ that imports the trainer is reported."""
    (tmp_path / "utils").mkdir()
    (tmp_path / "utils" / "helper.py").write_text("import os\nfrom trainer import Trainer\n")
    assert upward_imports(tmp_path) == ["utils/helper.py:2: trainer (trainer is above)"]
