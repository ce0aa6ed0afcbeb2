"""The run a `train.py` command trains, and its directories: a new run, the run it resumes (with
what that run wrote after the resumed point set aside), a run started again from the
beginning (killed before its first checkpoint), or the run a restarted job continues."""

import argparse
import logging
from pathlib import Path

from utils.checkpoint.files import check_readable_text, check_writable, numbered_checkpoints
from utils.errors import UserError
from utils.run.dirs import (
    RunDirs,
    create_run_dirs,
    existing_run,
    run_dirs_at,
    set_aside_later_checkpoints,
)
from utils.run.job import restart_count, slurm_job_id
from utils.run.lock import lock_run_dir

SLURM_RUN_ID = "the run id from SLURM_JOB_ID (the default in a SLURM job)"


def default_run_id(args: argparse.Namespace) -> None:
    """A new run in a SLURM job is named after the job (`--run-id` unless given), so that the
    job continues it when SLURM requeues it."""
    if args.run_id is None and args.config is not None and slurm_job_id():
        args.run_id, args.run_id_key = slurm_job_id(), SLURM_RUN_ID


def continue_restarted_job(
    args: argparse.Namespace, save_dir: str, name: str
) -> tuple[int, str] | None:
    """In a job started again (by torchrun after a worker died, by SLURM after a requeue), the
    run its id names, when it exists: the command now resumes it (`-r RUN_DIR`: its config
    and newest valid checkpoint) instead of refusing its id. Returns the log level and line
    that say what the restart does, or None (a first start, or a run not made yet)."""
    restarts = restart_count()
    if not restarts or args.config is None:
        return None
    if args.run_id is None:
        return logging.WARNING, (
            f"this job was started again ({restarts} restart(s)) without --run-id: it cannot "
            "know its run, so it starts a new one; give --run-id ID to continue a run across "
            "restarts"
        )
    models = existing_run(save_dir, name, args.run_id)
    if models is None:
        return None
    args.resume, args.config, args.run_id = str(models), None, None
    line = f"this job was started again ({restarts} restart(s)): it continues its run {models}"
    return logging.INFO, line


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
