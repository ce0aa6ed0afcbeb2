"""Search hyperparameters with Ray Tune: `python tune.py -c CONFIG -s SEARCH_FILE`.

Each trial is a normal run of train.py (`train.run`), with the trial's sampled values as
`-o` overrides, in its own run directory under the search's directory, reporting every epoch
to Ray (`logger/tune_report.py`) so that ASHA can stop it. An interrupted search goes on
with the same command and `--resume`: finished trials stay finished, the others resume from
their own checkpoints. Needs the optional extra: `pip install -e ".[tune]"`.
"""

from utils.stop_signals import StopSignals, exit_on_stop_signals

if __name__ == "__main__":
    STOPPED = "(nothing of the search was written: run the same command again)"  # the one line
    exit_on_stop_signals(STOPPED, at_once=True)

import argparse
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

import train
from builder import build_trainer, run_config
from utils.checkpoint.files import newest_checkpoint, numbered_checkpoints, write_json
from utils.cli import ArgumentParser, add_override_option, run_main
from utils.config.check import config_changes
from utils.config.file import load_config_file
from utils.config.keys import is_path_component
from utils.errors import UserError
from utils.run.dirs import readable_path
from utils.run.lock import lock_directory
from utils.search.ray_cluster import check_machine, import_ray, start_ray
from utils.search.results import (
    best_config,
    best_trial,
    trial_rows,
    trials_table,
    write_trials_csv,
)
from utils.search.space import (
    Search,
    check_searched_lr,
    load_search,
    monitored,
    most_epochs,
    override,
    ray_spaces,
)

RECORD_NAME = "search.json"  # in the search directory: what the search was started with
# Every trial saves each epoch (so that Ray's stop and a resume lose none) and shows no bar.
TRIAL_SETTINGS = {"trainer.save_period": 1, "trainer.progress_bar": False}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description="Search hyperparameters of a config with Ray Tune.")
    parser.add_argument("-c", "--config", required=True, help="the base config (.json, .yaml)")
    parser.add_argument("-s", "--search", required=True, help="the search file (.yaml, .json)")
    add_override_option(parser, "set a base config value by dotted key, as in train.py")
    parser.add_argument("--num-samples", type=int, help="trials to sample (default: the file's)")
    parser.add_argument("--name", help="the search's directory name (default: the file's stem)")
    parser.add_argument("--address", help="an existing Ray cluster to run on, e.g. auto")
    parser.add_argument("--node-ip-address", help="this machine's address in the Ray cluster, "
                        "when its node was started with ray start --node-ip-address")  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="go on with an interrupted search")
    args = parser.parse_args(argv)
    if args.num_samples is not None and args.num_samples < 1:
        parser.error(f"--num-samples: {args.num_samples} is not valid; expected an integer >= 1")
    return args


@dataclass(frozen=True)
class TrialPlan:
    """What every trial needs to start or resume its run, the same for all of them."""

    cwd: str  # the directory tune.py ran in: the config's relative paths are relative to it
    train_args: tuple[str, ...]  # train.py's arguments, but for the trial's own values
    models: str  # the directory holding each trial's run directory, by trial id
    best_key: str  # the reported best monitored value, e.g. best_val_loss


def run_trial(values: dict[str, Any], plan: TrialPlan) -> None:
    """One trial, in a Ray worker: a train.py run with the sampled `values` as `-o`, or the
    resumed run of this trial when its run directory exists (a restarted or resumed trial)."""
    import ray.tune

    from logger.tune_report import TuneReport

    os.chdir(plan.cwd)
    trial_id = ray.tune.get_context().get_trial_id()
    run_dir = Path(plan.models) / trial_id
    if (run_dir / "config.json").is_file():
        ended = ended_run_result(run_dir, plan.best_key)
        if ended is not None:  # it had finished when the search was stopped
            ray.tune.report(ended)
            return
        argv = ["-r", str(run_dir)]
    else:
        sampled = [part for key, value in values.items() for part in ("-o", override(key, value))]
        argv = [*plan.train_args, *sampled, "--run-id", trial_id]
    reporter = TuneReport(plan.best_key)
    train.run(train.parse_args(argv), [reporter])
    if reporter.final is not None:
        ray.tune.report(reporter.final)


def ended_run_result(run_dir: Path, best_key: str) -> dict[str, Any] | None:
    """The result of a trial whose run had ended (all epochs, or early stopping) before its
    end reached Ray, from its newest checkpoint; None if it has training left (or none)."""
    if not numbered_checkpoints(run_dir):
        return None
    _, checkpoint = newest_checkpoint(run_dir)
    options = checkpoint["config"]["trainer"]
    patience_spent = 0 < options["early_stop"] <= checkpoint["not_improved_count"]
    if checkpoint["epoch"] < options["epochs"] and not patience_spent:
        return None
    metric = best_key.removeprefix("best_")  # the epoch's own value is not kept: the best is
    best = checkpoint["monitor_best"]
    return {"epoch": checkpoint["epoch"], metric: best, best_key: best}


def check_values(args: argparse.Namespace, extra: list[str]) -> dict:
    """The config that the base config plus `extra` overrides makes, validated and built as a
    trial would build it (without data on a GPU); `UserError` if it is refused."""
    config = run_config(args.config, [*args.override, *extra])
    build_trainer(config, torch.device("cpu"))
    return config


def search_directory(config: dict, args: argparse.Namespace) -> Path:
    """`<save_dir>/search/<config name>/<search name>/`: Ray's state and the trials' runs."""
    name = args.name if args.name is not None else Path(args.search).stem
    if not is_path_component(name):
        raise UserError(f"--name: {name[:100]!r} is not valid; expected a directory name")
    return readable_path(Path(config["trainer"]["save_dir"]) / "search" / config["name"] / name)


def check_start(args: argparse.Namespace, directory: Path, record: dict, ray: Any) -> bool:
    """Whether Ray restores the search in `directory` (else it starts one there); refuses a
    start over an existing search, a resume of none, and a resume with other settings."""
    command = "python " + " ".join(sys.argv) if sys.argv[0].endswith("tune.py") else "tune.py"
    recorded = directory / RECORD_NAME
    if not args.resume:
        if directory.exists():
            raise UserError(
                f"search directory {directory} exists; to go on with that search add --resume "
                f"({command} --resume), or give this one another --name"
            )
        return False
    if not recorded.is_file():
        raise UserError(f"--resume: no search to resume in {directory}; start it without --resume")
    changes = config_changes(load_config_file(recorded), record)
    if changes:
        raise UserError(
            f"--resume: the search in {directory} was started with other settings "
            f"({'; '.join(changes[:3])}); resume with the same -c, -s, -o and --num-samples"
        )
    # False for a search stopped before Ray saved anything: it starts again.
    return ray.tune.Tuner.can_restore(str(directory.resolve()))


def take_search_directory(directory: Path) -> Path | None:
    """Make `directory` if need be and lock it for this process (a second `--resume` of a
    running search is refused, naming the holder); the topmost directory made, if any."""
    made = next((p for p in [*reversed(directory.parents), directory] if not p.exists()), None)
    directory.mkdir(parents=True, exist_ok=True)
    lock_directory(directory, "search.lock", "search directory",
                   "two processes must not run one search")  # fmt: skip
    return made


def make_tuner(search: Search, config: dict, plan: TrialPlan, directory: Path, restore: bool):
    """Ray's Tuner for the search: a new one, or the one restored from `directory`."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, plan=plan), dict(search.resources_per_trial)
    )
    if restore:
        return tune.Tuner.restore(str(directory.resolve()), trainable, resume_unfinished=True,
                                  resume_errored=True)  # fmt: skip
    metric, mode = monitored(config)
    if search.scheduler == "ASHA":
        scheduler = ASHAScheduler(time_attr="epoch", max_t=most_epochs(search, config),
                                  **search.scheduler_args)  # fmt: skip
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        trainable,
        param_space=ray_spaces(search),
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            scheduler=scheduler,
            num_samples=search.num_samples,
            max_concurrent_trials=search.max_concurrent_trials,
            # Ray's own record of a trial (params.json, progress.csv), beside models/ and log/.
            trial_dirname_creator=lambda trial: f"ray_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=directory.name,
            storage_path=str(directory.parent.resolve()),
            failure_config=tune.FailureConfig(max_failures=search.max_failures),
            verbose=1,
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ray = import_ray()
    config = check_values(args, [])  # as train.py -c would: a mistake of its own, once
    metric, mode = monitored(config)
    search = load_search(args.search, lambda extra: check_values(args, extra))
    if args.num_samples is not None:
        search = replace(search, num_samples=args.num_samples)
    check_searched_lr(search, config, args.search)
    address = args.address or os.environ.get("RAY_ADDRESS") or None  # as ray.init reads it
    check_machine(search, address, "--address" if args.address else "RAY_ADDRESS")
    directory = search_directory(config, args)
    record = {"config": config, "search": search.as_dict()}
    restore = check_start(args, directory, record, ray)
    made = take_search_directory(directory)
    write_json(directory / RECORD_NAME, record)
    print(f"search directory: {directory}", flush=True)
    plan = trial_plan(args, config, directory, metric)
    with contextlib.ExitStack() as ending:
        try:
            stopped_by = start_search_ray(ray, address, args.node_ip_address, made)
            results = make_tuner(search, config, plan, directory, restore).fit()
        finally:  # the search has ended: a stop now waits until Ray is down and results written
            late = ending.enter_context(StopSignals())
            ray.shutdown()
        if not stopped_by:
            report_trials(results, search, config, mode, plan, directory)
    resume = f"python {' '.join(sys.argv)}" + ("" if args.resume else " --resume")
    if stopped_by:  # fit returned what it had, with the search's state saved
        name = signal.Signals(stopped_by[0]).name
        print(f"stopped by {name}; to resume: {resume}", file=sys.stderr)
        return 128 + stopped_by[0]
    if results.num_errors:
        print(f"{results.num_errors} trial(s) failed; --resume retries them: {resume}")
    if late.received is not None:
        name = signal.Signals(late.received).name
        print(f"stopped by {name} as the search ended; its results are written", file=sys.stderr)
        return 128 + late.received
    return 0


def trial_plan(args: argparse.Namespace, config: dict, directory: Path, metric: str) -> TrialPlan:
    """The trials' train.py arguments: the base config's, saving in the search directory."""
    settings = [f"trainer.save_dir={directory.resolve()}"]
    settings += [override(key, value) for key, value in TRIAL_SETTINGS.items()]
    options = [part for item in [*args.override, *settings] for part in ("-o", item)]
    models = (directory / "models" / config["name"]).resolve()
    return TrialPlan(os.getcwd(), ("-c", args.config, *options), str(models), f"best_{metric}")


def start_search_ray(
    ray: Any, address: str | None, node_ip_address: str | None, made: Path | None
) -> list[int]:
    """`start_ray`; when it fails (no cluster at `--address auto`) the search never started,
    and the directory made for it (`made`, the topmost one) is removed."""
    try:
        return start_ray(ray, address, node_ip_address)
    except UserError:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise


def report_trials(
    results: Any, search: Search, config: dict, mode: str, plan: TrialPlan, directory: Path
) -> None:
    """The trials' table (printed, and trials.csv) and the best trial's config, to train."""
    keys = [space.key for space in search.spaces]
    rows = trial_rows(results, keys, plan.best_key, Path(plan.models))
    print(trials_table(rows, plan.best_key))
    write_trials_csv(directory / "trials.csv", rows, plan.best_key)
    best = best_trial(rows, mode, results)
    best_path = directory / "best_config.json"
    write_json(best_path, best_config(Path(best.run_dir) / "config.json", config, TRIAL_SETTINGS))
    print(f"best trial {best.trial_id}: {plan.best_key} {best.best:.6g}  ({best.run_dir})")
    print(f"trials: {directory / 'trials.csv'}")
    print(f"to train the best config: python train.py -c {best_path}")
    print(f"to evaluate the best trial: python test.py -r {best.run_dir}")


if __name__ == "__main__":
    exit_on_stop_signals(STOPPED)  # imported: unwind from now on
    run_main(main)
