"""The job around a run: started again by torchrun (`--max-restarts`, after a worker died) or by
SLURM (a requeue), named by SLURM's job id, and requeued before SLURM's time limit. A restarted
job runs its first command again (`train.py -c CONFIG --run-id ID`): the run id, naming the same
directory at every start, is what makes it continue its run rather than start another."""

import os
import subprocess

RESTART_COUNTS = ("TORCHELASTIC_RESTART_COUNT", "SLURM_RESTART_COUNT")


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
