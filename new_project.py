"""Start a new project from this template: `python new_project.py ../MyProject`.

The copy is lean: the framework, the default example and their tests. Optional features are
units (copier.yml lists them) that a copy has or lacks whole: `--with tune,wandb` adds some,
`--all` every one, `--list` says what each adds. copier makes the copy and records where the
template is, so that `make update` in the copy merges the template's later fixes. The copy
starts as a git repository whose first commit names the template's commit.
"""

import shutil
from collections.abc import Sequence
from pathlib import Path

from update_project import ANSWERS, check_units, git, run_copier, unit_catalogue, unit_line
from utils.cli import ArgumentParser, run_main
from utils.errors import UserError

TEMPLATE = Path(__file__).resolve().parent
# The first commit's author when git knows none: the copy can be made before git is set up.
FALLBACK_IDENTITY = ["-c", "user.name=new_project.py", "-c", "user.email=new_project.py@localhost"]


def new_project(target: Path, units: list[str]) -> Path:
    """Make the copy in `target` (new, or an empty directory) with `units`; leave nothing
    behind if that fails."""
    target = checked_target(target)
    commit = template_commit()
    made = next((p for p in reversed([target, *target.parents]) if not p.exists()), None)
    try:
        target.mkdir(parents=True, exist_ok=True)
        data = {"project_name": distribution_name(target), "units": units}
        run_copier("run_copy", src_path=str(TEMPLATE), dst_path=str(target), data=data)
        first_commit(target, units, commit)
    except BaseException as error:  # Ctrl-C, a full disk, a copier error: undo the copy
        remove_copy(made or target, emptied=made is None)
        if isinstance(error, OSError):
            message = f"{target}: {error.strerror or error}; nothing was left there"
            raise UserError(message) from None
        raise
    return target


def checked_target(target: Path) -> Path:
    """`target` resolved, once it is seen to be a place for a new project."""
    try:
        resolved = target.resolve(strict=False)
    except (OSError, RuntimeError) as error:  # a symlink loop
        raise UserError(f"{target}: cannot be resolved ({error}); choose another path") from None
    if resolved == TEMPLATE or TEMPLATE in resolved.parents:
        raise UserError(f"{resolved}: is inside the template; choose a path outside {TEMPLATE}")
    for parent in resolved.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"{resolved}: {parent} is a file, not a directory; choose another path")
    if resolved.exists() and not resolved.is_dir():
        raise UserError(f"{resolved}: is a file; choose a new path or an empty directory")
    if resolved.exists() and any(resolved.iterdir()):
        raise UserError(f"{resolved}: exists and is not an empty directory; choose a new path")
    return resolved


def template_commit() -> str:
    """The template's commit, and whether it has uncommitted changes (which the copy gets)."""
    if not (TEMPLATE / ".git").exists():
        raise UserError(f"{TEMPLATE}: the template is not a git repository (a downloaded "
                        "archive?); clone it with git, so that make update can merge its "
                        "later changes")  # fmt: skip
    commit = git("rev-parse", "HEAD", cwd=TEMPLATE).strip()
    dirty = git("status", "--porcelain", cwd=TEMPLATE)
    return f"{commit} with uncommitted changes" if dirty else commit


def first_commit(target: Path, units: list[str], commit: str) -> None:
    """Make the copy a git repository, its files committed, the message naming the template's
    commit, so that runs record their code version and `make update` can merge."""
    git("init", "--quiet", cwd=target)
    git("add", "--all", cwd=target)
    identity = [] if git_identity(target) else FALLBACK_IDENTITY
    with_units = f" with {', '.join(units)}" if units else ""
    message = f"New project from pytorch-template {commit}{with_units}"
    git(*identity, "commit", "--quiet", "-m", message, cwd=target)


def git_identity(directory: Path) -> bool:
    try:
        return bool(git("config", "user.email", cwd=directory).strip())
    except UserError:  # git config exits 1 when the key is not set
        return False


def remove_copy(path: Path, emptied: bool) -> None:
    """Remove what was made: `path`, the first directory made for the copy, or, with
    `emptied` (the copy's directory was there, empty, before), what is now inside it."""
    if not emptied:
        shutil.rmtree(path, ignore_errors=True)
        return
    for child in path.iterdir() if path.is_dir() else ():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def distribution_name(target: Path) -> str:
    """The copy's name in pyproject.toml, from its directory's name ("My Project" gives
    "my-project"), so that two projects installed in one environment do not replace each other."""
    name = "".join(c if c.isalnum() and c.isascii() else "-" for c in target.name.lower())
    return "-".join(part for part in name.split("-") if part) or "project"


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(description="Copy this template into a new project directory.")
    parser.add_argument("target", nargs="?", help="directory for the new project (new or empty)")
    parser.add_argument("--with", dest="units", default="", metavar="UNIT[,UNIT...]",
                        help="optional units to add (see --list)")  # fmt: skip
    parser.add_argument("--all", action="store_true", help="add every unit")
    parser.add_argument("--list", action="store_true", help="list the units and what each adds")
    args = parser.parse_args(argv)
    catalogue = unit_catalogue(TEMPLATE)
    if args.list and args.target is not None:
        parser.error("--list takes no target directory")
    if args.list:
        for name, unit in catalogue.items():
            print(unit_line(name, unit))
        return 0
    if args.target is None:
        parser.error("the target directory is required (or --list)")
    if args.all and args.units:
        parser.error("--with and --all: give one of them")
    wanted = list(catalogue) if args.all else [name for name in args.units.split(",") if name]
    check_units(wanted, catalogue, "--with")
    units = [name for name in catalogue if name in wanted]  # in the catalogue's order
    target = new_project(Path(args.target), units)
    has = f" with {', '.join(units)}" if units else " (lean: no optional units)"
    print(f"new project in {target}{has}; {ANSWERS} records the template for make update")
    print(f"next: cd {target} && make test")
    return 0


if __name__ == "__main__":
    run_main(main)
