"""The job around a run (the distributed unit): started again by torchrun (`--max-restarts`,
after a worker died) or by SLURM (a requeue), named by SLURM's job id, and requeued before
SLURM's time limit. A restarted job runs its first command again (`train.py -c CONFIG --run-id
ID`): the run id, naming the same directory at every start, is what makes it continue its run
rather than start another."""

import argparse
import logging
import os
import subprocess

from utils.run.dirs import existing_run

RESTART_COUNTS = ("TORCHELASTIC_RESTART_COUNT", "SLURM_RESTART_COUNT")
SLURM_RUN_ID = "the run id from SLURM_JOB_ID (the default in a SLURM job)"
RUN_ID_DEFAULT = ("a timestamp; in a SLURM job, the job id; a job that torchrun or SLURM starts "
                  "again continues the run it names")  # fmt: skip


def restart_count() -> int:
    """How many times this job has been started again (torchrun's or SLURM's
    `*_RESTART_COUNT`); 0 at its first start."""
    counts = [os.environ.get(name, "") for name in RESTART_COUNTS]
    return max((int(count) for count in counts if count.isdigit()), default=0)


def slurm_job_id() -> str | None:
    """The SLURM job this process runs in (the same across requeues), else None."""
    return os.environ.get("SLURM_JOB_ID") or None


def requeue_slurm_job() -> str:
    """Ask SLURM to put this job back in the queue (`scontrol requeue $SLURM_JOB_ID`); one line
    saying what happened, for the log."""
    job = slurm_job_id()
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True,
                                timeout=60)  # fmt: skip
    except (OSError, subprocess.SubprocessError) as error:
        return f"could not requeue SLURM job {job} (scontrol requeue {job}: {error})"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no message"]
        return f"scontrol requeue {job} failed (exit {result.returncode}): {lines[-1]}"
    return f"requeued SLURM job {job}: when it starts again, it resumes this run"


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
