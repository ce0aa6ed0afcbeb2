"""Where a run writes: `<save_dir>/models/<name>/<run_id>/` and `.../log/<name>/<run_id>/`."""

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from utils.checkpoint.files import CHECKPOINT_NAME, load_checkpoint, numbered_checkpoints
from utils.config.keys import is_path_component
from utils.distributed.process_group import launcher
from utils.errors import UserError


def readable_path(path: str | Path) -> Path:
    """`path` as logs and commands show it: relative to the working directory when it lies
    inside it, else absolute; the same style for a fresh run and a resumed one."""
    path = Path(path).resolve()
    cwd = Path.cwd().resolve()
    return path.relative_to(cwd) if path.is_relative_to(cwd) else path


@dataclass(frozen=True)
class RunDirs:
    models: Path  # config.json, checkpoints, model_best.pth
    log: Path  # info.log, TensorBoard event files

    @property
    def run_id(self) -> str:
        return self.models.name


def create_run_dirs(
    save_dir: str | Path, name: str, run_id: str | None = None, id_key: str = "--run-id"
) -> RunDirs:
    """Create a fresh pair of run directories; never reuse one that a run has written to.

    The id defaults to a timestamp, with `_1`, `_2`, ... appended while taken (`mkdir` without
    `exist_ok` is atomic: two processes racing for an id cannot both get it). An id the user
    gives (`id_key` names where from) is the directory's name or an error: a requeued job must
    find its run, not a copy beside it. Its directories are reused only while they hold
    nothing of a run (a start killed before its config.json); the run's lock settles a race.
    """
    save_dir = readable_path(save_dir)
    if run_id is None:
        base_id = datetime.now().strftime("%m%d_%H%M%S")
        for attempt in range(10_000):
            dirs = _run_dirs(save_dir, name, base_id if attempt == 0 else f"{base_id}_{attempt}")
            if not dirs.log.exists() and _make(dirs, exist_ok=False):
                return dirs
        raise RuntimeError(f"no free run id for {base_id!r} under {save_dir}")
    if not is_path_component(run_id):
        raise UserError(
            f"{id_key}: {run_id[:100]!r} is not valid; expected a directory name (not empty, "
            "'.' or '..', without '/' or NUL, at most 255 bytes)"
        )
    dirs = _run_dirs(save_dir, name, run_id)
    if existing_run(save_dir, name, run_id):
        raise UserError(
            f"{id_key}: {run_id!r} is a run that exists ({dirs.models}); choose another id "
            f"(--run-id), or go on with that run: {launcher()} train.py -r {dirs.models} (plus -o "
            "trainer.epochs=N to train a finished run longer)"
        )
    _make(dirs, exist_ok=True)
    return dirs


def existing_run(save_dir: str | Path, name: str, run_id: str) -> Path | None:
    """The models directory of the run `run_id` when a run has written to it (its config.json,
    a checkpoint, its log), else None."""
    dirs = _run_dirs(readable_path(save_dir), name, run_id)
    started = [*dirs.models.glob("config.json"), *dirs.models.glob("*.pth")]
    if started or (dirs.log.is_dir() and any(dirs.log.iterdir())):
        return dirs.models
    return None


def _run_dirs(save_dir: Path, name: str, run_id: str) -> RunDirs:
    return RunDirs(save_dir / "models" / name / run_id, save_dir / "log" / name / run_id)


def _make(dirs: RunDirs, exist_ok: bool) -> bool:
    """Create both directories; False if the models directory exists (and not `exist_ok`)."""
    try:
        dirs.models.parent.mkdir(parents=True, exist_ok=True)
        try:
            dirs.models.mkdir(exist_ok=exist_ok)
        except FileExistsError:
            return False
        dirs.log.mkdir(parents=True, exist_ok=exist_ok)
    except OSError as error:
        raise UserError(
            f"trainer.save_dir: cannot create {error.filename} ({error.strerror}); "
            "choose a writable directory"
        ) from None
    return True


def run_dirs_at(models: str | Path, name: str) -> RunDirs | None:
    """The run directories whose models directory is `models`, when it is one: shaped
    `<save_dir>/models/<name>/<run_id>/` for the run's `name`. Anywhere else (a checkpoint
    copied out of its run) is not a run directory, and nothing is written there."""
    models = Path(models).resolve()
    if len(models.parents) < 3 or models.parent.name != name or models.parents[1].name != "models":
        return None
    log = models.parents[2] / "log" / name / models.name
    return RunDirs(readable_path(models), readable_path(log))


def set_aside_later_checkpoints(models: Path, step: int, epoch: int) -> tuple[list[str], Path]:
    """Move what a run wrote after (`step`, `epoch`) into `models/abandoned_<time>/`: the
    checkpoints numbered later, a `model_best.pth` saved at a later step, and their test
    metrics. Resuming from an older checkpoint starts a new future; the old one is kept
    (not deleted) but out of the way, so that resuming and pruning see one timeline.
    Returns the names moved and where to."""
    later = []
    for path in numbered_checkpoints(models):
        kind, number = CHECKPOINT_NAME.fullmatch(path.name).groups()
        if int(number) > (step if kind == "step" else epoch):
            later.append(path)
    best = models / "model_best.pth"
    if best.is_file() and _saved_step(best) > step:
        later.append(best)
    if not later:
        return [], models
    metrics = [path.with_name(f"{path.stem}.test_metrics.json") for path in later]
    moved = later + [path for path in metrics if path.is_file()]
    destination = models / f"abandoned_{datetime.now():%m%d_%H%M%S}"
    while destination.exists():
        destination = destination.with_name(destination.name + "_")
    destination.mkdir()
    for path in moved:
        path.rename(destination / path.name)
    return [path.name for path in moved], destination


def _saved_step(path: Path) -> int:
    """The step a checkpoint was saved at; -1 (not later than anything) if it does not load."""
    try:
        return load_checkpoint(path)["step"]
    except UserError:
        return -1
