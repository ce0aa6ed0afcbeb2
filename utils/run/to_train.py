"""The run a `train.py` command trains, and its directories: a new run, the run it resumes (with
what that run wrote after the resumed point set aside), or a run started again from the
beginning (killed before its first checkpoint)."""

import argparse
from pathlib import Path

from utils.checkpoint.files import check_readable_text, check_writable, numbered_checkpoints
from utils.errors import UserError
from utils.run.dirs import RunDirs, create_run_dirs, run_dirs_at, set_aside_later_checkpoints
from utils.run.lock import lock_run_dir


def take_run_dirs(
    args: argparse.Namespace, config: dict, checkpoint: dict | None, restart: RunDirs | None
) -> tuple[RunDirs, list[str]]:
    """The run's directories, locked for this process: a resumed run's own (with what it
    wrote after the resumed point set aside), a restarted run's, or new ones; and what the
    log should say about them once it exists."""
    resuming = checkpoint is not None and args.config is None
    run_dirs = run_dirs_at(Path(args.resume).parent, config["name"]) if resuming else restart
    if run_dirs is not None and args.run_id is not None:
        raise UserError(
            f"--run-id: {args.resume} continues in its own run directory {run_dirs.models}; "
            "--run-id names new runs only"
        )
    notes = []
    if run_dirs is None:
        if resuming:
            notes.append("the checkpoint is not in a run directory: the run continues in a new one")
        run_dirs = create_run_dirs(
            config["trainer"]["save_dir"], config["name"], args.run_id, args.run_id_key
        )
    if resuming and config["trainer"]["metrics_csv"]:
        check_readable_text(run_dirs.log / "metrics.csv")  # which the run goes on writing
    check_writable(run_dirs.models / "config.json")  # a refusal leaves no lock or log behind
    lock_run_dir(run_dirs.models)  # before anything in it changes
    make_log_dir(run_dirs.log)  # gone from a copied or moved run
    if resuming and not notes:
        moved, where = set_aside_later_checkpoints(
            run_dirs.models, checkpoint["step"], checkpoint["epoch"]
        )
        if moved:
            notes.append(
                "resuming from an earlier point than this run reached: moved what it wrote "
                f"after that ({', '.join(moved)}) to {where}"
            )
    return run_dirs, notes


def run_to_restart(directory: Path) -> RunDirs | None:
    """A run directory with its config.json but no checkpoint yet (stopped or killed before
    its first one): `-r` starts that run again from the beginning, in the same directory."""
    if numbered_checkpoints(directory) or not (directory / "config.json").is_file():
        return None
    return run_dirs_at(directory, directory.resolve().parent.name)


def make_log_dir(log: Path) -> None:
    try:
        log.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the log directory {log} ({error.strerror})") from None
