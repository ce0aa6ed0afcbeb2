"""Where a run writes: `<save_dir>/models/<name>/<run_id>/` and `.../log/<name>/<run_id>/`."""

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

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


def create_run_dirs(save_dir: str | Path, name: str, run_id: str | None = None) -> RunDirs:
    """Create a fresh pair of run directories; never reuse one that exists.

    The id defaults to a timestamp. If that id is taken (two runs started in the same
    second, or a repeated `--run-id`), `_1`, `_2`, ... is appended. `mkdir` without
    `exist_ok` is atomic, so two processes racing for one id cannot both get it.
    """
    save_dir = readable_path(save_dir)
    base_id = run_id or datetime.now().strftime("%m%d_%H%M%S")
    for attempt in range(10_000):
        candidate = base_id if attempt == 0 else f"{base_id}_{attempt}"
        models = save_dir / "models" / name / candidate
        log = save_dir / "log" / name / candidate
        if log.exists():
            continue
        try:
            models.parent.mkdir(parents=True, exist_ok=True)
            try:
                models.mkdir()
            except FileExistsError:
                continue
            log.mkdir(parents=True)
        except OSError as error:
            raise UserError(
                f"trainer.save_dir: cannot create {error.filename} ({error.strerror}); "
                "choose a writable directory"
            ) from None
        return RunDirs(models, log)
    raise RuntimeError(f"no free run id for {base_id!r} under {save_dir}")


def run_dirs_of_checkpoint(checkpoint: str | Path) -> RunDirs:
    """The run directories a checkpoint belongs to (so a resumed run continues in them)."""
    models = Path(checkpoint).resolve().parent
    save_dir, name = models.parents[2], models.parent.name
    return RunDirs(readable_path(models), readable_path(save_dir / "log" / name / models.name))
