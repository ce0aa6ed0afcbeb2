"""Train a model from a config: `python train.py -c config/config.json`.

Resume with `-r saved/models/NAME/RUN_ID/checkpoint-epochN.pth`; add `-c NEW_CONFIG` to
fine-tune those weights under a new config in a new run. With the distributed unit, under
`torchrun --nproc_per_node=N train.py ...` each process trains one share of every batch
(DistributedDataParallel); rank 0 writes the run directory.
"""

# Before torch (seconds to import), Ctrl-C or SIGTERM ends the program with one line, not a
# traceback or a silent kill; only as a script, so that importing this leaves signals alone.
from utils.stop_signals import REQUEUE_SIGNAL, TRAINING_STOP_SIGNALS, Stopped, exit_on_stop_signals

if __name__ == "__main__":
    STOPPED = "outside the training loop (this stop saves no checkpoint)"  # what the one line says
    exit_on_stop_signals(STOPPED, at_once=True, signals=TRAINING_STOP_SIGNALS)

import argparse
import importlib
import logging
import os
import secrets
import subprocess
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.optim.lr_scheduler import OneCycleLR

from base import BaseTrainer, Hook
from base.resume_changes import resume_change_lines, resume_with_changes
from builder import build_trainer, run_config
from logger.logger import setup_logging
from utils.checkpoint.fields import naming_checkpoint
from utils.checkpoint.files import load_checkpoint, newest_checkpoint, write_json
from utils.cli import ArgumentParser, add_config_options, run_main
from utils.distributed import process_group
from utils.distributed.device import select_device
from utils.errors import UserError
from utils.run.dirs import RunDirs, readable_path
from utils.run.to_train import run_to_restart, take_run_dirs
from utils.seed import seed_everything
from utils.units import has_unit

logger = logging.getLogger("train")
# Restarted and SLURM jobs (the distributed unit); a copy without it runs neither.
job = importlib.import_module("utils.run.job") if has_unit("utils.run.job") else None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description="Train a model from a JSON or YAML config.")
    parser.add_argument("-c", "--config", help="config file (.json, .yaml or .yml)")
    parser.add_argument("-r", "--resume", help="checkpoint, or run directory (its newest "
                        "checkpoint), to resume from; with -c: to fine-tune")  # fmt: skip
    add_config_options(parser)
    default = job.RUN_ID_DEFAULT if job else "a timestamp"
    parser.add_argument("--run-id", help=f"name of the run directory (default: {default})")
    parser.add_argument("--lr", type=float, help="shortcut for -o optimizer.args.lr=LR")
    parser.add_argument("--bs", type=int, help="shortcut for -o data_loader.args.batch_size=BS")
    args = parser.parse_args(argv)
    if args.config is None and args.resume is None:
        parser.error("give a config with -c, or a checkpoint to resume with -r")
    for flag, value in (("-c", args.config), ("-r", args.resume)):
        if value == "":
            parser.error(f"{flag}: empty path; give a file (or, for -r, a run directory)")
    for key, value in (("optimizer.args.lr", args.lr), ("data_loader.args.batch_size", args.bs)):
        if value is not None:  # after the -o options: the shortcut wins
            args.override.append(f"{key}={value}")
    args.run_id_key = "--run-id"  # where the run id came from, for messages
    if job:
        job.default_run_id(args)
    return args


def code_version() -> dict[str, str | bool]:
    """The git commit of the code, and whether files differ from it (`dirty`: a change, or a
    file git neither tracks nor ignores); outside git: "unknown" and null (not known)."""

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(["git", *args], capture_output=True, text=True,
                                    cwd=Path(__file__).parent, timeout=5)  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    changes = git("status", "--porcelain") if commit else None
    return {"commit": commit or "unknown", "dirty": bool(changes) if commit else None}


def build(
    args: argparse.Namespace, extra_hooks: Sequence[Hook] = ()
) -> tuple[BaseTrainer, RunDirs | None]:
    """Everything a run needs, built and checked; then (on the writing rank) its directories.
    `extra_hooks` are the calling program's own (tune.py's reporter), after the config's."""
    restarted = None
    if job and args.config is not None and job.restart_count():  # it may become `-r` of its run
        new = run_config(args.config, args.override)
        restarted = job.continue_restarted_job(args, new["trainer"]["save_dir"], new["name"])
    checkpoint, restart = checkpoint_to_resume(args)
    config_file = restart.models / "config.json" if restart else args.config
    config = run_config(config_file, args.override, checkpoint, args.resume)
    fine_tune = checkpoint is not None and args.config is not None
    if checkpoint is not None and not fine_tune:
        check_epochs_left(config, checkpoint, args.resume, restarted is not None)
    device, device_ids = set_up_process(args.device, config)
    trainer = build_trainer(config, device, device_ids, extra_hooks=extra_hooks,
                            weights_from_checkpoint=checkpoint is not None)  # fmt: skip
    applied = start_from_checkpoint(trainer, checkpoint, args.resume, fine_tune)
    trainer.trial_step()  # one step on one batch, undone: a part that fails, fails here

    # Built and checked: only now does the run get directories (a refusal ends every rank).
    taken = process_group.on_main(take_run_dirs, args, config, checkpoint, restart)
    if taken is None:  # (not the writing rank)
        setup_logging(None, process_verbosity(config))  # nothing on disk
        return trainer, None
    run_dirs, notes = taken
    write_json(run_dirs.models / "config.json", config)
    setup_logging(run_dirs.log, config["trainer"]["verbosity"])
    log_run(trainer, run_dirs, device_ids)
    if restarted is not None:
        logger.log(*restarted)
    if fine_tune:
        logger.info("fine-tuning the weights of %s", readable_path(args.resume))
    elif checkpoint is not None:
        log_resume(trainer, args.resume, checkpoint, notes, applied)
    elif restart is not None:
        logger.info("%s has no checkpoint yet: starting the run again from the beginning, "
                    "with its config.json", run_dirs.models)  # fmt: skip
    return trainer, run_dirs


def checkpoint_to_resume(args: argparse.Namespace) -> tuple[dict | None, RunDirs | None]:
    """The checkpoint `-r` names (of a run directory: its newest, whose path `args.resume`
    then holds), or the run to start again, of a run directory with no checkpoint yet."""
    if not args.resume:
        return None, None
    if not Path(args.resume).is_dir():
        return load_checkpoint(args.resume), None
    if args.config is None and (restart := run_to_restart(Path(args.resume))):
        return None, restart
    resume_path, checkpoint = newest_checkpoint(args.resume)
    args.resume = str(resume_path)
    return checkpoint, None


def set_up_process(requested_device: str | None, config: dict) -> tuple[torch.device, list[int]]:
    """This process's device(s), console logging and seed; the config gets the seed (drawn
    when it has none) and the code version, for config.json and the checkpoints."""
    device, device_ids = select_device(requested_device, config["n_gpu"])
    if process_group.launched_by_torchrun():
        device, device_ids = process_group.join_process_group(device), []
    # What the builder logs (frozen parameters, parameter groups) goes to the console now and
    # into info.log once the run directory exists.
    setup_logging(None, process_verbosity(config), hold=True)
    if process_group.is_distributed() and process_group.local_rank() == 0:
        logger.info("%s", process_group.node_ranks())
    if config["seed"] is None:  # the same on every rank
        config["seed"] = process_group.broadcast_from_main(secrets.randbits(31))
    seed_everything(config["seed"])
    config["code_version"] = code_version()
    return device, device_ids


def process_verbosity(config: dict) -> int:
    """`trainer.verbosity` on the writing rank. Each other node's first process logs its ranks
    and the epoch lines; other ranks show warnings only."""
    verbosity = config["trainer"]["verbosity"]
    if process_group.is_main_process():
        return verbosity
    return min(verbosity, 1) if process_group.local_rank() == 0 else 0


def start_from_checkpoint(
    trainer: BaseTrainer, checkpoint: dict | None, path: str | None, fine_tune: bool
) -> dict[str, str]:
    """Load the checkpoint's weights (fine-tuning) or its whole state (resuming: with the
    changed optimizer arguments applied, or refused); the applied changes' log lines."""
    with naming_checkpoint(path):  # a malformed field names the file
        if fine_tune:
            trainer.load_weights(checkpoint)
        elif checkpoint is not None:
            return resume_with_changes(trainer, checkpoint)
    return {}


def log_run(trainer: BaseTrainer, run_dirs: RunDirs, device_ids: list[int]) -> None:
    """The models (debug), and one line of what runs where: run id, code, device(s), seed."""
    config = trainer.config
    for model in trainer.bare_models.values():
        logger.debug("%s", model)
    processes = ""
    if process_group.is_distributed():
        strategy = "FSDP" if config["trainer"]["strategy"] == "fsdp" else "DDP"
        processes = f"  {strategy} world size {process_group.world_size()}"
    gpus = f" x{len(device_ids)}" if len(device_ids) > 1 else ""
    uncommitted = " (with uncommitted changes)" if config["code_version"]["dirty"] else ""
    logger.info("run %s  code %s%s  device %s%s%s  seed %d", run_dirs.run_id,
                config["code_version"]["commit"], uncommitted, trainer.device, gpus, processes,
                config["seed"])  # fmt: skip


def log_resume(
    trainer: BaseTrainer, path: str, checkpoint: dict, notes: list[str], applied: dict[str, str]
) -> None:
    """Where the resumed run picks up, what `take_run_dirs` noted, and the config changes."""
    logger.info("resuming %s, from %s", resume_position(trainer), readable_path(path))
    for note in notes:
        logger.warning("%s", note)
    for level, line in resume_change_lines(checkpoint["config"], trainer.config, applied):
        logger.log(level, "%s", line)


class RunFinished(Exception):
    """A job started again (torchrun, SLURM) after its run's last epoch: it ends with 0."""


def check_epochs_left(config: dict, checkpoint: dict, resume: str, restarted: bool) -> None:
    """A resumed run must have epochs left: `trainer.epochs` is the total, not "N more"."""
    epochs, done = config["trainer"]["epochs"], checkpoint["epoch"]
    if epochs <= done and restarted:
        raise RunFinished(f"this job was started again after its run ended: {resume} has "
                          f"completed its {epochs} epoch(s); nothing is left to do")  # fmt: skip
    if epochs <= done:
        raise UserError(
            f"trainer.epochs: {epochs} is the total number of epochs, and {resume} has "
            f"completed {done}, so nothing is left to train; to train longer, pass "
            f"-o trainer.epochs=N with N > {done}"
        )


def resume_position(trainer: BaseTrainer) -> str:
    """Where a resumed run picks up, in words."""
    epoch, epochs, step = trainer.epoch, trainer.epochs, trainer.step
    done, total = trainer.batches.batches_done, trainer.batches.batches_per_epoch
    if done == 0:
        return f"after epoch {epoch} of {epochs} (step {step})"
    return f"in epoch {epoch + 1} of {epochs}, after {done} of its {total} batches (step {step})"


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


def run(args: argparse.Namespace, extra_hooks: Sequence[Hook] = ()) -> int:
    """Build the run that `args` (parsed by `parse_args`) describe and train it; a tune.py
    trial is this, with its reporter in `extra_hooks`."""
    run_dirs, device = None, f" -d {args.device}" if args.device else ""  # (in the commands)
    try:
        trainer, run_dirs = build(args, extra_hooks)
        trainer.train(run_dirs)
        process_group.barrier()  # no rank leaves the process group while another still uses it
        if run_dirs is not None:
            log_next_commands(trainer, run_dirs, device)  # (in the group: how it started)
    except Stopped as stopped:
        if run_dirs is not None:  # with no checkpoint yet, -r starts the run again
            logger.info("to resume: %s train.py%s -r %s", process_group.launcher(), device,
                        run_dirs.models)  # fmt: skip
        if job and stopped.signum == REQUEUE_SIGNAL and job.slurm_job_id():
            if process_group.is_main_process():  # after the checkpoint: the job may end at once
                logger.info("%s", job.requeue_slurm_job())
            process_group.barrier()  # the other ranks wait: torchrun ends every rank when one exits
        raise
    except RunFinished as finished:
        if os.environ.get("RANK", "0") == "0":  # (before the process group: one line, not N)
            print(finished)
    finally:
        process_group.shutdown()
    return 0


def log_next_commands(trainer: BaseTrainer, run_dirs: RunDirs, device: str) -> None:
    """Where the outputs are, and the commands that evaluate the run and train it on (on the
    `device` it was given, `-d`)."""
    models, epoch = run_dirs.models, trainer.epoch
    start = f"{process_group.launcher()} train.py{device}"
    logger.info("outputs in %s and %s", models, run_dirs.log)
    if trainer.evaluates():  # (test.py refuses a trainer without a validation step: a GAN's)
        logger.info("to evaluate: python test.py%s -r %s", device, models)
    # Early stopping's count is restored on resume: one more epoch without improvement
    # would end the resumed run again, so the commands turn it off.
    patience, monitor = trainer.config["trainer"]["early_stop"], trainer.monitor
    spent = patience > 0 and monitor.enabled and monitor.not_improved_count >= patience
    early_stop = " -o trainer.early_stop=0" if spent else ""
    if epoch < trainer.epochs:  # a hook ended it
        logger.info("to train on: %s -r %s%s", start, models, early_stop)
    elif any(isinstance(s, OneCycleLR) for s in trainer.lr_schedulers.values()):
        # One cycle's length is fixed when it starts: a resume cannot lengthen it.
        logger.info("to train longer, fine-tune the last weights with a new cycle in a "
                    "new run: %s -c %s -r %s -o trainer.epochs=%d",
                    start, models / "config.json", models, epoch)  # fmt: skip
    else:
        logger.info("to train longer (trainer.epochs is the total, so any N > %d): "
                    "%s -r %s -o trainer.epochs=%d%s",
                    epoch, start, models, 2 * epoch, early_stop)  # fmt: skip


if __name__ == "__main__":
    exit_on_stop_signals(STOPPED, signals=TRAINING_STOP_SIGNALS)  # imported: unwind from now on
    run_main(main, process_group.end_process)
