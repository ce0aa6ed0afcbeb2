"""Bring the template's later changes into this project: `make update` (this script).

A project made by new_project.py records in `.copier-answers.yml` where its template is, the
template commit it was made from (or last updated to) and its units. copier renders the copy
as that commit made it and as the template's newest commit makes it, and merges the
difference into this project three ways: your own commits survive, and where both changed
the same lines git's conflict markers are left for you. `--with NAME` adds units.
"""

import subprocess
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import yaml

from utils.cli import EXIT_FAILED, ArgumentParser, run_main
from utils.errors import UserError, did_you_mean, first_line

PROJECT = Path(__file__).resolve().parent
ANSWERS = ".copier-answers.yml"
GIT_TIMEOUT = 60  # seconds for git to reach a template, so an unreachable one is an error


def git(*args: str, cwd: Path, timeout: float | None = None) -> str:
    """Run git, returning its output; a failure is a UserError with git's first line."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip
    except FileNotFoundError:
        raise UserError("git is not installed; new projects and updates need it") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"git {args[0]}: no answer within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise UserError(f"git {args[0]}: {first_line(Exception(done.stderr)) or 'failed'}")
    return done.stdout


def unit_catalogue(template: Path) -> dict[str, dict]:
    """The template's units by name, each with its `about` line and `files` (copier.yml)."""
    questions = yaml.safe_load((template / "copier.yml").read_text())
    return questions["unit_catalogue"]["default"]


def check_units(names: Sequence[str], catalogue: dict[str, dict], option: str) -> None:
    for name in names:
        if name not in catalogue:
            raise UserError(f"{option}: no unit {name!r}{did_you_mean(name, catalogue)}")


def run_copier(action: str, **options) -> None:
    """Call copier (imported here: only new projects and updates need it), its errors one line."""
    try:
        import copier
    except ImportError:
        raise UserError('this needs copier: pip install "copier>=9.4,<10"') from None
    try:
        warnings.filterwarnings("ignore", category=copier.errors.DirtyLocalWarning)
        getattr(copier, action)(defaults=True, overwrite=True, quiet=True, vcs_ref="HEAD",
                                unsafe=False, **options)  # fmt: skip
    except (copier.errors.CopierError, ValueError) as error:
        hint = ""  # (copier takes the checked-out commit of a template checkout)
        if "Downgrades are not supported" in str(error):
            hint = ("; the template is checked out at an older commit than the one this project "
                    "was made from or last updated to: check out its newest there")  # fmt: skip
        raise UserError(f"copier: {first_line(error)}{hint}") from None


def recorded_answers() -> dict:
    """What the last copy or update recorded: `_src_path`, `_commit`, `units`, ..."""
    if not (PROJECT / ANSWERS).is_file():
        raise UserError(f"{PROJECT}: no {ANSWERS}; only a project made from the template "
                        "can be updated from it")  # fmt: skip
    return yaml.safe_load((PROJECT / ANSWERS).read_text())


def template_units(source: str) -> dict[str, dict]:
    """Reach the template at `source` (a path or git URL) and read its units."""
    not_template = (
        f"{source}: not a checkout of the template (a git repository with its copier.yml)"
    )
    if Path(source).exists() and not (Path(source).is_dir() and is_checkout(Path(source))):
        raise UserError(not_template)  # (git's own words are of a URL: "does not exist")
    with tempfile.TemporaryDirectory() as scratch:
        git("clone", "--quiet", "--depth", "1", source, scratch, cwd=PROJECT, timeout=GIT_TIMEOUT)
        try:
            return unit_catalogue(Path(scratch))
        except (OSError, KeyError, TypeError, yaml.YAMLError):
            raise UserError(not_template) from None


def is_checkout(directory: Path) -> bool:
    try:
        git("rev-parse", "--git-dir", cwd=directory)
    except UserError:
        return False
    return True


def list_units(template: str | None) -> str:
    """The template's units, one a line, with those this project has marked."""
    answers = recorded_answers()
    units = template_units(template or answers["_src_path"])
    return "\n".join(f"{'*' if name in answers['units'] else ' '} {unit_line(name, unit)}"
                     for name, unit in units.items())  # fmt: skip


def unit_line(name: str, unit: dict) -> str:
    """A unit's name and what it adds, in the column layout of both listings."""
    return f"{name:<15}{unit['about']}"


def units_held(catalogue: dict[str, dict], units: list[str]) -> list[str]:
    """The units this project does not list but holds files of: parts of the core when it
    was made, which the template has since made units. Kept, not deleted by the update."""
    tracked = set(git("ls-files", cwd=PROJECT).splitlines())
    return [
        name for name, unit in catalogue.items() if name not in units
        and any(f == p.strip("/") or f.startswith(p.strip("/") + "/") for p in unit["files"]
                for f in tracked)
    ]  # fmt: skip


def uncommitted(checkout: Path, shown: int) -> str:
    """The files of `checkout` with uncommitted changes, the first `shown` of them, for a
    message ("" when there are none)."""
    changed = [line[3:] for line in git("status", "--porcelain", cwd=checkout).splitlines()]
    return ", ".join(changed[:shown]) + (", ..." if len(changed) > shown else "")


def check_committed(template: str) -> None:
    """Refuse a template checkout with uncommitted changes: copier would update from a commit
    it makes of them, record that commit, and the next update could not find it."""
    files = uncommitted(Path(template), shown=3)
    if files:
        raise UserError(f"the template at {template} has uncommitted changes ({files}); commit "
                        "them there first, so that this project records a commit it can "
                        "update from again")  # fmt: skip


def record_location(answers: dict, source: str) -> None:
    """Commit the template's new location to the answers file; on failure (git knows no
    author, say) put the file back as it was."""
    path = PROJECT / ANSWERS
    header = [line for line in path.read_text().splitlines(keepends=True) if line[:1] == "#"]
    path.write_text("".join(header) + yaml.safe_dump({**answers, "_src_path": source},
                                                     sort_keys=False))  # fmt: skip
    try:
        git("commit", "--quiet", "-m", f"The template is at {source}", ANSWERS, cwd=PROJECT)
    except UserError:
        git("checkout", "--", ANSWERS, cwd=PROJECT)
        raise


def update(template: str | None, new_units: list[str]) -> tuple[int, str]:
    """Update this project from `template` (default: where it was made from), adding
    `new_units`; returns the exit code and the line to tell the user."""
    answers = recorded_answers()
    files = uncommitted(PROJECT, shown=5)
    if files:
        raise UserError(f"uncommitted changes ({files}); commit or stash them first, so that "
                        "the update cannot mix with them")  # fmt: skip
    source = template or answers["_src_path"]
    if Path(source).exists():  # a path: recorded whole, whichever directory it was given from
        source = str(Path(source).resolve())
    catalogue = template_units(source)
    check_units(new_units, catalogue, "WITH")
    if Path(source).is_dir():
        check_committed(source)
    kept = units_held(catalogue, answers["units"])
    units = list(dict.fromkeys([*answers["units"], *new_units, *kept]))
    if source != answers["_src_path"]:  # copier reads the old template from the answers
        record_location(answers, source)
    run_copier("run_update", dst_path=str(PROJECT), data={"units": units}, conflict="inline",
               skip_answered=True)  # fmt: skip
    conflicts = git("diff", "--name-only", "--diff-filter=U", cwd=PROJECT).split()
    if conflicts:
        files = ", ".join(conflicts)
        return EXIT_FAILED, f"conflicts in {files}: resolve the <<<<<<< markers, then commit"
    if not git("status", "--porcelain", cwd=PROJECT).strip():
        return 0, f"already up to date with {source}"
    commit = yaml.safe_load((PROJECT / ANSWERS).read_text())["_commit"]
    added = [name for name in new_units if name not in answers["units"]]
    notes = (f"; added units {', '.join(added)}" if added else "") + (
        f"; kept units {', '.join(kept)}, whose files this project has" if kept else ""
    )
    return 0, f"updated from {source} at {commit}{notes}: review with git diff, then commit"


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(description="Merge the template's later changes into this project.")
    parser.add_argument("--template", help="the template's path or git URL (default: the "
                        "one this project was made from)")  # fmt: skip
    parser.add_argument("--with", dest="units", default="", metavar="UNIT[,UNIT...]",
                        help="units to add (see --list)")  # fmt: skip
    parser.add_argument(
        "--list",
        action="store_true",
        help="list the template's units (* marks those this project has)",
    )
    args = parser.parse_args(argv)
    if args.list:
        print(list_units(args.template))
        return 0
    code, message = update(args.template, [name for name in args.units.split(",") if name])
    print(message, file=sys.stderr if code else sys.stdout)
    return code


if __name__ == "__main__":
    run_main(main)
