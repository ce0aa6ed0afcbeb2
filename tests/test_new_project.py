"""new_project.py and `make update`, on a template repository made from this working tree:
what a lean copy and each unit hold, refusals that leave nothing behind, a copy that is a
git repository and installs the README's way, and updates merged with the user's commits."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, computed_once, load, read_json, run_dir

from update_project import unit_catalogue

CATALOGUE = unit_catalogue(ROOT)
TEMPLATE_ONLY = {".copier", "new_project.py", "tests/test_new_project.py",
                 "tests/test_new_project_recipe.py", "copier.yml"}  # fmt: skip
GIT_USER = {"GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@localhost",
            "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@localhost"}  # fmt: skip


def run(*command: str | Path, cwd: Path, env: dict | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess:  # fmt: skip
    # Without this session's PYTEST_ variables: a pytest run inside a copy that inherited
    # PYTEST_XDIST_WORKER would take itself for a worker of this session and share its
    # once-per-session directories (conftest's computed_once) with other sessions.
    own = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    environment = {**own, **GIT_USER, "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    return subprocess.run([str(part) for part in command], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def git(directory: Path, *args: str) -> str:
    result = run("git", *args, cwd=directory)
    assert result.returncode == 0, result.stderr
    return result.stdout


def commit_all(directory: Path, message: str) -> None:
    git(directory, "add", "--all")
    git(directory, "commit", "--quiet", "-m", message)


def tracked(directory: Path) -> set[str]:
    return set(filter(None, git(directory, "ls-files", "-z").split("\0")))


def unit_files(template: Path, name: str) -> set[str]:
    """The files of unit `name` in `template`: its files, and those in its directories."""
    files = set()
    for entry in CATALOGUE[name]["files"]:
        path = template / entry.lstrip("/")
        files |= {str(p.relative_to(template)) for p in path.rglob("*") if p.is_file()} | (
            {entry.lstrip("/")} if path.is_file() else set()
        )
    return {f for f in files if "__pycache__" not in f}


@pytest.fixture(scope="session")
def template(tmp_path_factory) -> Path:
    """A git repository of this working tree's files (tracked and new, as git sees them), one
    commit: the template a user clones, with what is not committed here yet."""

    def make(directory: Path) -> None:
        listed = git(ROOT, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
        for name in filter(None, listed.split("\0")):
            if (ROOT / name).is_file():
                (directory / "template" / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, directory / "template" / name)
        git(directory / "template", "init", "--quiet")
        commit_all(directory / "template", "the template")

    return computed_once(tmp_path_factory, "template", make) / "template"


def new_project(template: Path, *args: str | Path, cwd: Path | None = None):
    return run(sys.executable, template / "new_project.py", *args, cwd=cwd or template)


@pytest.fixture(scope="session")
def lean(template: Path, tmp_path_factory) -> Path:
    """A lean copy, made once; copy it before changing it."""

    def make(directory: Path) -> None:
        result = new_project(template, directory / "Lean Project")
        assert result.returncode == 0, result.stderr

    return computed_once(tmp_path_factory, "lean", make) / "Lean Project"


# ---------------------------------------------------------------- what a copy holds


def test_list_names_every_unit_with_what_it_adds(template: Path) -> None:
    result = new_project(template, "--list")
    assert result.returncode == 0, result.stderr
    listed = dict(line.split(maxsplit=1) for line in result.stdout.splitlines())
    assert listed == {name: unit["about"] for name, unit in CATALOGUE.items()}


def test_a_lean_copy_has_the_core_and_no_unit(template: Path, lean: Path) -> None:
    all_units = set().union(*(unit_files(template, name) for name in CATALOGUE))
    expected = {f for f in tracked(template) - all_units
                if not any(f == t or f.startswith(f"{t}/") for t in TEMPLATE_ONLY)}  # fmt: skip
    expected = {f.removesuffix(".jinja") for f in expected if "{{" not in f}
    assert tracked(lean) == expected | {".copier-answers.yml"}
    assert [p.name for p in (lean / "saved").iterdir()] == [".gitkeep"]
    assert not (lean / "docs").exists()  # (it holds only units' pages)
    answers = yaml.safe_load((lean / ".copier-answers.yml").read_text())
    assert answers["units"] == [] and answers["_src_path"] == str(template)
    assert answers["_commit"] == git(template, "rev-parse", "--short", "HEAD").strip()


def test_a_copys_files_name_it_and_describe_only_what_it_has(lean: Path) -> None:
    project = (lean / "pyproject.toml").read_text()
    assert 'name = "lean-project"' in project
    assert "pytorch-template" not in project and "only-in-template" not in project
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    requirements = tomllib.loads(project)["project"]["optional-dependencies"]["dev"]
    names = {re.split(r"[\[<>=!~ ;]", requirement)[0] for requirement in requirements}
    assert names == {"pytest", "pytest-xdist", "ruff", "hypothesis"}  # no unit's, no other project
    readme = (lean / "README.md").read_text()
    for name in CATALOGUE:
        assert f"only-with-unit: {name}" not in readme and f"docs/{name}.md" not in readme
    assert "new_project.py" not in readme and "make update" in readme
    kept, dropped = [], False  # where dropped lines leave blank lines in a row, one is kept
    for line in (ROOT / "README.md").read_text().splitlines():
        if "only-with-unit" in line or "only-in-template" in line:
            dropped = True
        elif line.strip() or not (dropped and kept and not kept[-1].strip()):
            kept.append(line)
            dropped = False
    assert readme.splitlines() == kept


def test_a_lean_copy_passes_its_own_lint(lean: Path) -> None:
    """`make lint`, which the copy's .ci/run runs first: ruff's checks, and its formatting,
    which takes in the README's code blocks (a blank line too few there fails it)."""
    for command in (["check", "."], ["format", "--check", "."]):
        result = run(sys.executable, "-m", "ruff", *command, cwd=lean)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_each_unit_brings_its_files_and_its_lines(template, lean, tmp_path, name) -> None:
    result = new_project(template, tmp_path / "copy", "--with", name)
    assert result.returncode == 0, result.stderr
    copy = tmp_path / "copy"
    assert tracked(copy) - tracked(lean) == unit_files(template, name)
    assert tracked(lean) - tracked(copy) == set()
    assert f"only-with-unit: {name}" in (copy / "README.md").read_text()
    others = set(CATALOGUE) - {name}
    text = (copy / "README.md").read_text() + (copy / "pyproject.toml").read_text()
    assert not [other for other in others if f"only-with-unit: {other}" in text]


def test_all_is_every_unit_and_the_whole_template(template: Path, tmp_path: Path) -> None:
    result = new_project(template, tmp_path / "full", "--all")
    assert result.returncode == 0, result.stderr
    full = tmp_path / "full"
    answers = yaml.safe_load((full / ".copier-answers.yml").read_text())
    assert answers["units"] == list(CATALOGUE)
    template_files = {f.removesuffix(".jinja") for f in tracked(template) if "{{" not in f}
    assert tracked(full) == {
        f for f in template_files if not any(f == t or f.startswith(f"{t}/") for t in TEMPLATE_ONLY)
    } | {".copier-answers.yml"}


def test_the_copy_is_a_git_repository_and_runs_record_its_commit(
    template: Path, lean: Path, tmp_path: Path
) -> None:
    (message,) = git(lean, "log", "--format=%s").splitlines()
    assert git(template, "rev-parse", "HEAD").strip() in message
    copy = tmp_path / "copy"
    shutil.copytree(lean, copy)
    result = run(sys.executable, "train.py", "-c", "config/config.json", "-o", "trainer.epochs=1",
                 "-o", "trainer.len_epoch=2", cwd=copy)  # fmt: skip
    assert result.returncode == 0, result.stderr
    version = read_json(run_dir(copy / "saved") / "config.json")["code_version"]
    assert version == {"commit": git(copy, "rev-parse", "--short", "HEAD").strip(), "dirty": False}
    assert git(copy, "status", "--porcelain") == ""  # outputs and caches are ignored
    (copy / "model" / "new_model.py").write_text("WIDTH = 3\n")  # written, not yet added
    probe = run(sys.executable, "-c", "import train; print(train.code_version())", cwd=copy)
    assert probe.stdout.strip() == repr({**version, "dirty": True}), probe.stderr


# ---------------------------------------------------------------- refusals


def make_loop(tmp_path: Path) -> Path:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    return tmp_path / "a" / "project"


def make_non_empty(tmp_path: Path) -> Path:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    return tmp_path / "taken"


def make_under_file(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "project"


@pytest.mark.parametrize(
    ("make_target", "extra", "message"),
    [
        (make_non_empty, [], "exists and is not an empty directory"),
        (make_under_file, [], "is a file, not a directory"),
        (make_loop, [], "cannot be resolved"),
        (lambda tmp_path: None, [], "is inside the template"),
        (lambda tmp_path: tmp_path / "p", ["--with", "tunee"], "--with: no unit 'tunee'; did you "
         "mean 'tune'?"),
        (lambda tmp_path: tmp_path / "p", ["--with", "gan", "--all"], "give one of them"),
    ],
)  # fmt: skip
def test_a_bad_target_or_unit_is_one_line_and_leaves_nothing(
    template: Path, tmp_path: Path, make_target, extra: list[str], message: str
) -> None:
    target = make_target(tmp_path) or template / "inner"
    before = sorted(tmp_path.rglob("*")) if not target.is_relative_to(template) else None
    result = new_project(template, target, *extra)
    assert (result.returncode, len(result.stderr.splitlines())) == (2, 1), result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (template / "inner").exists()
    if before is not None:
        assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    ("options", "message"), [("ro", "Read-only file system"), ("size=256k", "No space left")]
)
def test_a_read_only_or_full_file_system_is_one_line_and_leaves_nothing(
    template: Path, tmp_path: Path, options: str, message: str
) -> None:
    """In a mount namespace of its own (unshare), a small or read-only tmpfs is the target."""
    if shutil.which("unshare") is None or run("unshare", "-rm", "true", cwd=tmp_path).returncode:
        pytest.skip("no unshare with user and mount namespaces here")
    mount = tmp_path / "mount"
    mount.mkdir()
    script = (f'mount -t tmpfs -o {options} tmpfs "{mount}" && '
              f'"{sys.executable}" "{template / "new_project.py"}" "{mount}/new/project"; '
              f'code=$?; ls -A "{mount}"; exit $code')  # fmt: skip
    result = run("unshare", "-rm", "sh", "-c", script, cwd=template)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr
    assert result.stdout == ""  # nothing left on the file system, not even new/


def test_a_template_that_is_not_a_git_repository_is_one_line(template, tmp_path) -> None:
    """A downloaded archive of the template: its copies could never be updated."""
    archive = tmp_path / "archive"
    shutil.copytree(template, archive, ignore=shutil.ignore_patterns(".git"))
    result = new_project(archive, tmp_path / "project")
    assert (result.returncode, len(result.stderr.splitlines())) == (2, 1), result.stderr
    assert "not a git repository" in result.stderr and not (tmp_path / "project").exists()


# ---------------------------------------------------------------- installing a copy


def environment_of_this_python(venv: Path) -> None:
    """A new virtual environment that sees this Python's packages (a .pth file), so that pip
    installs from them and, offline, fails at once on a requirement they do not meet."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    sites = [p for p in sys.path if p.endswith("site-packages")]
    (site,) = venv.glob("lib/python*/site-packages")
    (site / "parent.pth").write_text("\n".join(sites) + "\n")


OFFLINE = {"PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0"}  # pip's inverted option


def test_make_train_trains_a_config_and_resumes_a_run(lean: Path, tmp_path: Path) -> None:
    """`make train` trains `CONFIG`; `make train RESUME=RUN_DIR` resumes that run with its
    own config (not a fine-tuning of its weights in a new run, which `-c` would make)."""
    copy = tmp_path / "copy"
    shutil.copytree(lean, copy)
    venv = tmp_path / "venv"
    environment_of_this_python(venv)
    (venv / ".installed").touch()  # (installed: this Python's packages)
    options = "-o trainer.len_epoch=2 -o trainer.progress_bar=false -o trainer.epochs="
    result = run("make", "train", f"VENV={venv}", f"ARGS={options}1", cwd=copy)
    assert result.returncode == 0, result.stderr
    (models,) = (copy / "saved" / "models" / "Mnist_LeNet").iterdir()
    result = run("make", "train", f"VENV={venv}", f"RESUME={models}", f"ARGS={options}2", cwd=copy)
    assert result.returncode == 0, result.stderr
    assert "resuming after epoch 1 of 2 (step 2), from " in result.stdout
    assert [p.name for p in models.parent.iterdir()] == [models.name]
    assert load(models / "checkpoint-epoch2.pth")["epoch"] == 2


@pytest.mark.slow
def test_make_test_installs_a_lean_copy_and_its_suite_passes(lean: Path, tmp_path) -> None:
    """The README's two commands in a fresh copy: `make test` makes the environment, installs
    the copy `.[dev]`, and the copy's own (fast) suite passes in it."""
    copy = tmp_path / "copy"
    shutil.copytree(lean, copy)
    venv = tmp_path / "venv"
    environment_of_this_python(venv)
    tests = "-x -q -p no:cacheprovider -m 'not slow'"
    result = run(
        "make", "test", f"VENV={venv}", f"ARGS={tests}", cwd=copy, env=OFFLINE, timeout=1800
    )  # a whole suite, on a busy machine too
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and " failed" not in result.stdout
    listed = run(f"{venv}/bin/python", "-m", "pip", "list", "--format=freeze", cwd=copy)
    assert "lean-project==" in listed.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CATALOGUE))
def test_a_copy_with_one_unit_passes_that_units_tests(template, tmp_path, name) -> None:
    """The unit's own (fast) tests pass in a copy that has only it: it needs nothing of the
    other units or of the template's own tools. (The core's are the lean copy's suite.)"""
    copy = tmp_path / "copy"
    assert new_project(template, copy, "--with", name).returncode == 0
    own = sorted(f for f in unit_files(template, name) if f.startswith("tests/"))
    if own:
        fast = ["-q", "-n", "0", "-p", "no:cacheprovider", "-m", "not slow"]  # one process
        result = run(sys.executable, "-m", "pytest", *fast, *own, cwd=copy)
        assert result.returncode == 0, result.stdout[-3000:]
        assert " passed" in result.stdout
    else:  # the benchmarks: their scripts start in the copy
        result = run(sys.executable, "-m", "benchmarks.cpu_default", "--help", cwd=copy)
        assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- make update


@pytest.fixture
def upstream(template: Path, tmp_path: Path) -> Path:
    """A template repository of one's own to commit to."""
    clone = tmp_path / "template"
    git(tmp_path, "clone", "--quiet", str(template), str(clone))
    return clone


def make_update(copy: Path, target: str = "update", **options: str) -> subprocess.CompletedProcess:
    """`make update` (or `make units`) as a user runs it, with this Python as the copy's
    environment's."""
    venv = copy.parent / "venv"
    if not venv.exists():
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        (venv / "bin" / "python").chmod(0o755)
    variables = [f"{key}={value}" for key, value in options.items()]
    return run("make", "--no-print-directory", target, f"VENV={venv}", *variables, cwd=copy)


def copy_of(upstream: Path, tmp_path: Path, *args: str) -> Path:
    copy = tmp_path / "copy"
    result = new_project(upstream, copy, *args)
    assert result.returncode == 0, result.stderr
    return copy


@pytest.mark.slow
def test_update_merges_the_templates_fixes_with_the_users_commits(upstream, tmp_path) -> None:
    copy = copy_of(upstream, tmp_path)
    seed = copy / "utils" / "seed.py"
    seed.write_text(seed.read_text() + "\n# the user's own line\n")
    (copy / "model" / "my_model.py").write_text('"""Mine."""\n')
    commit_all(copy, "my work")
    checkpoint = upstream / "trainer" / "hooks" / "checkpointer.py"
    checkpoint.write_text("# a fix in the template\n" + checkpoint.read_text())
    (upstream / "tune.py").write_text((upstream / "tune.py").read_text() + "\n# search fix\n")
    commit_all(upstream, "a fix")

    result = make_update(copy)
    assert result.returncode == 0, result.stderr
    assert "review with git diff, then commit" in result.stdout
    assert (copy / "trainer" / "hooks" / "checkpointer.py").read_text().startswith("# a fix")
    assert seed.read_text().endswith("# the user's own line\n")
    assert (copy / "model" / "my_model.py").exists() and not (copy / "tune.py").exists()
    answers = yaml.safe_load((copy / ".copier-answers.yml").read_text())
    assert answers["_commit"] == git(upstream, "rev-parse", "--short", "HEAD").strip()
    commit_all(copy, "the template's fix")
    assert "already up to date" in make_update(copy).stdout


@pytest.mark.slow
def test_an_update_keeps_what_the_template_has_made_a_unit_since(upstream, tmp_path) -> None:
    """A project made while a feature was core keeps it when the template makes it a unit:
    the update adds that unit to the project rather than deleting its files."""
    copy = copy_of(upstream, tmp_path)
    questions = (upstream / "copier.yml").read_text()
    catalogue = "unit_catalogue:\n  type: yaml\n  when: false\n  default:\n"
    assert catalogue in questions
    seeding = "    seeding:\n      about: seeding\n      files:\n        - /utils/seed.py\n"
    (upstream / "copier.yml").write_text(questions.replace(catalogue, catalogue + seeding))
    commit_all(upstream, "seeding becomes a unit")
    result = make_update(copy)
    assert result.returncode == 0, result.stderr
    assert "kept units seeding, whose files this project has" in result.stdout
    assert (copy / "utils" / "seed.py").exists() and not (copy / "docs" / "gan.md").exists()
    assert yaml.safe_load((copy / ".copier-answers.yml").read_text())["units"] == ["seeding"]


@pytest.mark.slow
def test_a_conflict_is_left_as_markers_and_named_in_one_line(upstream, tmp_path) -> None:
    copy = copy_of(upstream, tmp_path)
    for directory, text in ((copy, "mine"), (upstream, "theirs")):
        loss = directory / "model" / "loss.py"
        loss.write_text(loss.read_text().replace('"""', f'"""{text}: ', 1))
        commit_all(directory, text)
    result = make_update(copy)
    assert result.returncode != 0
    (line,) = [line for line in result.stderr.splitlines() if "conflicts in" in line]
    assert "model/loss.py" in line
    merged = (copy / "model" / "loss.py").read_text()
    assert "<<<<<<<" in merged and "mine" in merged and "theirs" in merged


@pytest.mark.slow
def test_with_adds_a_unit_to_a_copy(upstream: Path, tmp_path: Path) -> None:
    copy = copy_of(upstream, tmp_path)
    result = make_update(copy, WITH="gan")
    assert result.returncode == 0, result.stderr
    assert "; added units gan: review with git diff, then commit" in result.stdout
    assert (copy / "trainer" / "gan_trainer.py").exists() and (copy / "docs" / "gan.md").exists()
    assert yaml.safe_load((copy / ".copier-answers.yml").read_text())["units"] == ["gan"]
    assert "only-with-unit: gan" in (copy / "README.md").read_text()
    commit_all(copy, "the gan unit")
    listed = make_update(copy, target="units").stdout.splitlines()
    assert sorted(line[:1] + line[2:].split()[0] for line in listed) == sorted(
        ("*" if name == "gan" else " ") + name for name in CATALOGUE
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("prepare", "options", "message"),
    [
        (
            lambda copy, _: (copy / "train.py").write_text("edited"),
            {},
            "uncommitted changes (train",
        ),
        (
            lambda _, upstream: (upstream / "test.py").write_text("edited"),
            {},
            "the template at",
        ),
        (lambda *_: None, {"TEMPLATE": "/nonexistent/template"}, "git clone:"),
        # A directory, a file, a git repository that are not the template (its copier.yml).
        (lambda *_: None, {"TEMPLATE": "/"}, "/: not a checkout of the template"),
        (lambda *_: None, {"TEMPLATE": "README.md"}, "not a checkout of the template"),
        (lambda *_: None, {"TEMPLATE": "."}, "not a checkout of the template (a git repo"),
        (lambda *_: None, {"WITH": "gann"}, "WITH: no unit 'gann'; did you mean 'gan'?"),
    ],
)
def test_a_refused_update_is_one_line_and_changes_nothing(
    upstream: Path, tmp_path: Path, prepare, options: dict, message: str
) -> None:
    copy = copy_of(upstream, tmp_path)
    (upstream / "README.md").write_text((upstream / "README.md").read_text() + "\nnew line\n")
    commit_all(upstream, "a change to bring in")
    prepare(copy, upstream)
    head, status = git(copy, "rev-parse", "HEAD"), git(copy, "status", "--porcelain")
    result = make_update(copy, **options)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert (git(copy, "rev-parse", "HEAD"), git(copy, "status", "--porcelain")) == (head, status)


@pytest.mark.slow
def test_a_template_checked_out_at_an_older_commit_is_one_line(upstream, tmp_path) -> None:
    """copier takes the commit checked out in a template checkout: one older than the copy's
    was copier's own "downgrading" message, which did not say what to do."""
    (upstream / "README.md").write_text((upstream / "README.md").read_text() + "\nnew line\n")
    commit_all(upstream, "the commit the copy is made from")
    copy = copy_of(upstream, tmp_path)
    git(upstream, "checkout", "--quiet", "HEAD~1")
    head = git(copy, "rev-parse", "HEAD")
    result = make_update(copy)
    errors = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr
    assert errors[0].endswith("the template is checked out at an older commit than the one "
                              "this project was made from or last updated to: check out its "
                              "newest there")  # fmt: skip
    assert git(copy, "rev-parse", "HEAD") == head and not git(copy, "status", "--porcelain")


@pytest.mark.slow
def test_template_sets_where_the_template_now_is(upstream: Path, tmp_path: Path) -> None:
    copy = copy_of(upstream, tmp_path)
    moved = tmp_path / "moved"
    upstream.rename(moved)
    (moved / "model" / "metric.py").write_text("# moved and fixed\n" + (moved / "model" /
                                               "metric.py").read_text())  # fmt: skip
    commit_all(moved, "a fix after the move")
    assert make_update(copy).returncode != 0  # the recorded path is gone
    result = make_update(copy, TEMPLATE=str(moved))
    assert result.returncode == 0, result.stderr
    assert (copy / "model" / "metric.py").read_text().startswith("# moved and fixed")
    answers = (copy / ".copier-answers.yml").read_text()
    assert yaml.safe_load(answers)["_src_path"] == str(moved)
    assert answers.startswith("# Written by new_project.py") and not answers.endswith("\n\n")
