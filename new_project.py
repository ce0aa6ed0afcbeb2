"""Start a new project from this template: `python new_project.py ../MyProject`.

Copies the template's code, configs, bundled data, tests and docs; leaves out run outputs
(`saved/`), downloaded datasets, caches, virtual environments and version control.
"""

import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from utils.cli import ArgumentParser, run_main
from utils.errors import UserError

TEMPLATE = Path(__file__).resolve().parent
SKIPPED = shutil.ignore_patterns(
    ".git", "__pycache__", "*.pyc", "*.egg-info", ".venv", "venv", ".pytest_cache",
    ".ruff_cache", ".hypothesis", "MNIST", ".ipynb_checkpoints",
)  # fmt: skip


def copy_template(target: Path) -> None:
    """Copy the template into `target`, which must not exist yet or be empty."""
    target = target.resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{target}: exists and is not an empty directory; choose a new path")
    if target == TEMPLATE or TEMPLATE in target.parents:
        raise UserError(f"{target}: is inside the template; choose a path outside {TEMPLATE}")
    shutil.copytree(TEMPLATE, target, ignore=_ignore, dirs_exist_ok=True)
    (target / "saved").mkdir(exist_ok=True)
    (target / "saved" / ".gitkeep").touch()
    project = target / "pyproject.toml"
    project.write_text(
        re.sub(r'^name = ".*"$', f'name = "{distribution_name(target)}"', project.read_text(),
               count=1, flags=re.MULTILINE)
    )  # fmt: skip


def distribution_name(target: Path) -> str:
    """The copy's name in pyproject.toml, from its directory's name ("My Project" gives
    "my-project"), so that two projects installed in one environment do not replace each other."""
    name = "".join(c if c.isalnum() else "-" for c in target.name.lower())
    return re.sub("-+", "-", name).strip("-") or "project"


def _ignore(directory: str, names: list[str]) -> set[str]:
    """Skip the usual clutter, everything inside `saved/` (run outputs), and the pretrained
    weights put in `data/weights/` (large downloads, like MNIST's files)."""
    if Path(directory) == TEMPLATE / "saved":
        return set(names)
    skipped = SKIPPED(directory, names)
    return skipped | {"weights"} & set(names) if Path(directory) == TEMPLATE / "data" else skipped


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(description="Copy this template into a new project directory.")
    parser.add_argument("target", help="directory for the new project (must not exist yet)")
    args = parser.parse_args(argv)
    copy_template(Path(args.target))
    print(f"new project in {Path(args.target).resolve()}")
    return 0


if __name__ == "__main__":
    run_main(main)
