"""tune.py and the search file: parsing and its refusals without Ray, then real searches
(Ray started in a subprocess, so those are slow): end to end, killed and resumed, and the
command-line refusals."""

import contextlib
import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("ray.tune")

from conftest import ROOT, run_script, shrunk, wait_for, wait_until
from test_cli_errors import assert_refused, run_in_process

import tune
from builder import build_trainer, trainer_keys
from utils.config.check import load_run_config
from utils.config.file import parse_value
from utils.errors import TrainingFailed, UserError
from utils.search.results import best_trial, trial_rows
from utils.search.space import (
    Space,
    check_searched_lr,
    load_search,
    monitored,
    override,
    ray_spaces,
)

CONFIG = str(ROOT / "config" / "config.json")


def search_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(text)
    return path


def test_each_space_kind_and_the_defaults(tmp_path):
    path = search_file(tmp_path, """
space:
  optimizer.args.lr: {loguniform: [1.0e-4, 1.0e-2]}
  data_loader.args.batch_size: {choice: [32, 64]}
  arch.args.dropout: {uniform: [0.0, 0.5]}
  trainer.epochs: {randint: [2, 5]}
  lr_scheduler.args.gamma: {grid: [0.1, 0.5]}
""")  # fmt: skip
    search = load_search(path)
    assert search.spaces == (
        Space("optimizer.args.lr", "loguniform", (1e-4, 1e-2)),
        Space("data_loader.args.batch_size", "choice", (32, 64)),
        Space("arch.args.dropout", "uniform", (0.0, 0.5)),
        Space("trainer.epochs", "randint", (2, 5)),
        Space("lr_scheduler.args.gamma", "grid", (0.1, 0.5)),
    )
    # randint's high is exclusive: the largest value a trial can get is high - 1.
    assert [space.edge_values() for space in search.spaces] == [
        [1e-4, 1e-2], [32, 64], [0.0, 0.5], [2, 4], [0.1, 0.5],
    ]  # fmt: skip
    assert (search.num_samples, search.scheduler, search.scheduler_args) == (1, "ASHA", {})
    assert search.resources_per_trial == {"cpu": 1, "gpu": 0}
    spaces = ray_spaces(search)
    assert spaces["lr_scheduler.args.gamma"] == {"grid_search": [0.1, 0.5]}
    assert (spaces["trainer.epochs"].lower, spaces["trainer.epochs"].upper) == (2, 5)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "space: {a.b: {choice: [1]}}\nnum_sample: 3",
            "num_sample: unknown key; did you mean 'num_samples'",
        ),
        (
            "space: {optimizer.args.lr: {logunifrm: [1, 2]}}",
            "space.optimizer.args.lr: unknown space kind 'logunifrm'; did you mean 'loguniform'",
        ),
        (
            "space: {optimizer.args.lr: {uniform: [0.1, 0.01]}}",
            "space.optimizer.args.lr: [0.1, 0.01] is not valid; uniform takes [low, high]",
        ),
        (
            "space: {optimizer.args.lr: {loguniform: [0, 0.1]}}",
            "space.optimizer.args.lr: [0, 0.1] is not valid; loguniform takes",
        ),
        (
            "space: {trainer.epochs: {randint: [1.5, 3]}}",
            "space.trainer.epochs: [1.5, 3] is not valid; randint takes [low, high], integers",
        ),
        (
            "space: {arch.args.dropout: {choice: []}}",
            "space.arch.args.dropout: [] is not valid; choice takes a non-empty list",
        ),
        (
            "space: {}",
            "space: missing or empty",
        ),
        (
            "space: {a..b: {choice: [1]}}",
            "space.a..b: expected a dotted config key",
        ),
        (  # the value after '=' would be what every trial trains with
            "space: {'optimizer.args.lr=0.5 #': {choice: [0.001]}}",
            "space.optimizer.args.lr=0.5 #: expected a dotted config key of names",
        ),
        (
            "space: {trainer.monitor: {choice: [max val_accuracy]}}",
            "space.trainer.monitor: a search cannot vary trainer.monitor (it is what trials are "
            "compared on)",
        ),
        (
            "space: {name: {choice: [a, b]}}",
            "space.name: a search cannot vary name",
        ),
        (
            "space: {trainer.save_dir: {choice: [/tmp/a]}}",
            "space.trainer.save_dir: a search cannot vary trainer.save_dir",
        ),
        (  # the whole trainer node would replace save_dir too
            "space: {trainer: {choice: [{epochs: 1}]}}",
            "space.trainer: a search cannot vary trainer.save_dir",
        ),
        (
            "space: {trainer.save_period.x: {choice: [1]}}",
            "space.trainer.save_period.x: a search cannot vary trainer.save_period",
        ),
        (
            "space: {a.b: {choice: [1]}}\nscheduler: {type: PBT}",
            "scheduler.type: 'PBT' is not valid; expected 'ASHA' or 'FIFO'",
        ),
        (
            "space: {a.b: {choice: [1]}}\nscheduler: {args: {max_t: 9}}",
            "scheduler.args.max_t: set by tune.py",
        ),
        (
            "space: {a.b: {choice: [1]}}\nscheduler: {args: {reduction_factor: 1}}",
            "scheduler.args.reduction_factor: 1 is not valid; expected a number > 1",
        ),
        (
            "space: {a.b: {choice: [1]}}\nresources_per_trial: {gpu: -1}",
            "resources_per_trial.gpu: -1 is not valid; expected a number >= 0",
        ),
        (
            "space: {a.b: {choice: [1]}}\nnum_samples: 0",
            "num_samples: 0 is not valid; expected an integer >= 1",
        ),
    ],
)
def test_search_file_errors_name_the_key(tmp_path, text, message):
    path = search_file(tmp_path, text)
    with pytest.raises(UserError) as caught:
        load_search(path)
    assert str(caught.value).startswith(f"search file {path}: {message}")
    assert "\n" not in str(caught.value)


def test_every_problem_of_a_search_file_is_in_its_one_line(tmp_path):
    """As with a config: a second mistake is not left for the next try."""
    path = search_file(tmp_path, """
space:
  optimizer.args.lr: {logunifrom: [1.0e-3, 1.0e-2]}
  arch.args.dropout: {uniform: [0.5, 0.1]}
num_sample: 2
scheduler: {type: ASHA, args: {grace: 1}}
""")  # fmt: skip
    with pytest.raises(UserError) as caught:
        load_search(path)
    assert str(caught.value) == (
        f"search file {path}: num_sample: unknown key; did you mean 'num_samples'? | "
        "space.optimizer.args.lr: unknown space kind 'logunifrom'; did you mean 'loguniform' or "
        "'uniform'? | space.arch.args.dropout: [0.5, 0.1] is not valid; uniform takes [low, "
        "high], numbers with low < high; a float drawn uniformly | scheduler.args.grace: "
        "unknown argument; did you mean 'grace_period' or 'brackets'?"
    )


def test_the_files_mistakes_and_every_space_the_config_refuses_are_one_line(tmp_path):
    """A misspelt kind, and two spaces whose values the config refuses (checked on the
    spaces that are well formed): all three at once."""
    path = search_file(tmp_path, """
space:
  optimizer.args.lr: {logunifrom: [1.0e-3, 1.0e-2]}
  trainer.epochs: {randint: [0, 3]}
  arch.args.dropot: {uniform: [0.1, 0.2]}
""")  # fmt: skip
    args = tune.parse_args(["-c", CONFIG, "-s", str(path), *shrunk(tmp_path)])
    with pytest.raises(UserError) as caught:
        load_search(path, lambda extra: tune.check_values(args, extra))
    kind, epochs, dropout = str(caught.value).split(" | space.")
    assert kind == f"search file {path}: space.optimizer.args.lr: unknown space kind " \
        "'logunifrom'; did you mean 'loguniform' or 'uniform'?"  # fmt: skip
    assert epochs.startswith("trainer.epochs: the value 0 is refused: trainer.epochs: 0 is not")
    assert dropout.startswith("arch.args.dropot: the value 0.1 is refused: arch")


@pytest.mark.parametrize(
    "space, message",
    [
        (
            "trainer.epochs: {randint: [0, 3]}",
            "space.trainer.epochs: the value 0 is refused: trainer.epochs: 0 is not valid",
        ),
        (
            "arch.args.dropot: {uniform: [0.1, 0.2]}",
            "space.arch.args.dropot: the value 0.1 is refused: arch",
        ),
        (
            "trainer.epochs.x: {choice: [1]}",
            "space.trainer.epochs.x: the value 1 is refused: -o trainer.epochs.x: trainer.epochs "
            "is not a mapping",
        ),
        (
            "'trainer.hooks[1].args.decay': {choice: [0.9]}",
            "space.trainer.hooks[1].args.decay: the value 0.9 is refused: -o trainer.hooks[1]."
            "args.decay: trainer.hooks has 1 entry, so no entry [1]",
        ),
        (
            "'trainer.hooks[0].args.decay': {uniform: [0.5, 1.5]}",
            "space.trainer.hooks[0].args.decay: the value 1.5 is refused: trainer.hooks[0].args."
            "decay: 1.5 is not valid for EMA",
        ),
    ],
)
def test_values_the_config_refuses_name_the_space(tmp_path, space, message):
    """Every edge of a space is checked against the config as a trial would build it."""
    path = search_file(tmp_path, f"space: {{{space}}}")
    args = tune.parse_args(["-c", CONFIG, "-s", str(path), *shrunk(tmp_path), "-o", EMA_HOOK])
    with pytest.raises(UserError) as caught:
        load_search(path, lambda extra: tune.check_values(args, extra))
    assert str(caught.value).startswith(f"search file {path}: {message}")


EMA_HOOK = "trainer.hooks=[{type: EMA, args: {decay: 0.9}}]"


def test_a_space_reaches_into_a_list_by_the_key_path_of_an_override(tmp_path):
    """`trainer.hooks[0].args.decay` is searched as `-o` sets it: each trial's config has it."""
    path = search_file(tmp_path, "space: {'trainer.hooks[0].args.decay': {uniform: [0.9, 0.99]}}")
    args = tune.parse_args(["-c", CONFIG, "-s", str(path), *shrunk(tmp_path), "-o", EMA_HOOK])
    (space,) = load_search(path, lambda extra: tune.check_values(args, extra)).spaces
    config = load_run_config(args.config, None, [*args.override, override(space.key, 0.95)])
    assert config["trainer"]["hooks"] == [{"type": "EMA", "args": {"decay": 0.95}}]


def test_when_no_trial_reports_the_first_failure_is_named_with_its_error_file(tmp_path):
    """A trial that fails before its run directory exists has no info.log to point to: the
    line gives its error's last line (the trial's own message) and Ray's error.txt, and the
    table leaves its run_dir empty rather than name a directory that is not there."""
    models = tmp_path / "models"
    (models / "b2").mkdir(parents=True)  # the second trial got as far as its run directory
    error = RuntimeError("ray::run_trial()\n  File ...\nUserError: arch.args.width: 11.3 is "
                         "not valid for LeNet\n")  # fmt: skip
    results = [
        SimpleNamespace(metrics={}, config={"lr": 0.1}, error=error, path=str(tmp_path / "ray_b2")),
        SimpleNamespace(metrics={}, config={"lr": 0.2}, error=error, path=str(tmp_path / "ray_a1")),
    ]
    rows = trial_rows(results, ["lr"], "best_val_loss", models)
    assert [(row.trial_id, row.status, row.run_dir) for row in rows] == [
        ("a1", "error", ""), ("b2", "error", str(models / "b2"))
    ]  # fmt: skip
    with pytest.raises(TrainingFailed) as failed:
        best_trial(rows, "min", results)
    assert str(failed.value) == (
        "no trial reported a result; trial a1 failed: UserError: arch.args.width: 11.3 is not "
        f"valid for LeNet (all of it: {tmp_path / 'ray_a1' / 'error.txt'})"
    )
    finished = [*rows, replace(rows[0], trial_id="c3", best=0.5, status="finished")]
    assert best_trial(finished, "min", results).trial_id == "c3"


def test_metric_and_mode_come_from_the_monitor():
    assert monitored({"trainer": {"monitor": "min val_loss"}}) == ("val_loss", "min")
    assert monitored({"trainer": {"monitor": "max val_accuracy"}}) == ("val_accuracy", "max")
    with pytest.raises(UserError, match=r"^trainer.monitor: 'off', but a search needs"):
        monitored({"trainer": {"monitor": "off"}})


def test_a_searched_lr_that_a_cyclic_schedule_overrides_is_refused(tmp_path):
    path = search_file(tmp_path, "space:\n  optimizer.args.lr: {loguniform: [1.0e-4, 1.0e-2]}\n")
    search = load_search(path)
    one_cycle = {"lr_scheduler": {"type": "OneCycleLR", "args": {"max_lr": 0.003}}}
    with pytest.raises(UserError, match=r"space.optimizer.args.lr: OneCycleLR sets the learning"):
        check_searched_lr(search, one_cycle, path)
    check_searched_lr(search, {"lr_scheduler": {"type": "StepLR", "args": {}}}, path)
    check_searched_lr(search, {"lr_scheduler": None}, path)
    max_lr = search_file(tmp_path, "space:\n  lr_scheduler.args.max_lr: {uniform: [0.001, 0.01]}\n")
    check_searched_lr(load_search(max_lr), one_cycle, max_lr)


@pytest.mark.parametrize("value", [1e-05, 0.1, 64, "Adam", True, None, [1, 2], "1e-3"])
def test_a_sampled_value_reaches_the_trial_unchanged(value):
    key, _, text = override("optimizer.args.lr", value).partition("=")
    assert key == "optimizer.args.lr" and parse_value(text) == value


def trial_runs(search_dir: Path) -> list[Path]:
    return sorted((search_dir / "models" / "Mnist_LeNet").iterdir())


def read_trials(search_dir: Path) -> list[dict]:
    with open(search_dir / "trials.csv", newline="") as file:
        return list(csv.DictReader(file))


# tune.py, with Ctrl-C coming as the ended search starts writing its results.
INTERRUPTED_AS_IT_ENDS = """
import os, signal, sys
sys.argv[0] = "tune.py"
import tune
from utils.cli import run_main

def interrupted(*args):
    os.kill(os.getpid(), signal.SIGINT)
    return report(*args)

report, tune.report_trials = tune.report_trials, interrupted
run_main(tune.main)
"""


@pytest.mark.slow
def test_two_trial_search_end_to_end_even_when_stopped_as_it_ends(tmp_path):
    """A Ctrl-C after the trials have ended, while Ray shuts down or the results are being
    written, waits for them: every result is written, then the exit is 130 with one line
    (it once said "nothing of the search was written", and nothing was)."""
    path = search_file(tmp_path, """
space:
  optimizer.args.lr: {loguniform: [1.0e-3, 3.0e-3]}
  arch.args.dropout: {choice: [0.1, 0.3]}
num_samples: 2
""")  # fmt: skip
    command = [sys.executable, "-c", INTERRUPTED_AS_IT_ENDS, "-c", CONFIG, "-s", str(path),
               *shrunk(tmp_path / "saved")]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 130, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "stopped by SIGINT as the search ended; its results are written"
    )
    search_dir = tmp_path / "saved" / "search" / "Mnist_LeNet" / "search"
    assert f"search directory: {search_dir}" in result.stdout
    runs = trial_runs(search_dir)
    assert len(runs) == 2, result.stdout[-3000:] + result.stderr[-3000:]  # (what became of one)
    for run in runs:
        assert (run / "config.json").is_file() and list(run.glob("checkpoint-epoch*.pth"))
        log = search_dir / "log" / "Mnist_LeNet" / run.name
        assert list(log.glob("events.out.tfevents.*")) and (log / "info.log").is_file()
        config = json.loads((run / "config.json").read_text())
        assert config["trainer"]["save_dir"] == str(search_dir.resolve())
    rows = read_trials(search_dir)
    assert list(rows[0]) == ["trial_id", "optimizer.args.lr", "arch.args.dropout",
                             "best_val_loss", "epochs", "status", "run_dir"]  # fmt: skip
    assert sorted(row["trial_id"] for row in rows) == [run.name for run in runs]
    for row in rows:
        assert 1e-3 <= float(row["optimizer.args.lr"]) <= 3e-3
        assert row["arch.args.dropout"] in ("0.1", "0.3") and float(row["best_val_loss"]) > 0
    best = min(rows, key=lambda row: float(row["best_val_loss"]))
    best_config = json.loads((search_dir / "best_config.json").read_text())
    assert best_config["optimizer"]["args"]["lr"] == float(best["optimizer.args.lr"])
    assert best_config["trainer"]["save_dir"] == str(tmp_path / "saved")
    assert best_config["trainer"]["progress_bar"] is True and "code_version" not in best_config
    # train.py -c takes it: it resolves, and builds.
    config = load_run_config(search_dir / "best_config.json", None, [], trainer_keys)
    build_trainer(config, torch.device("cpu"))


@pytest.mark.slow
def test_killed_search_resumes_without_redoing_finished_trials(tmp_path):
    path = search_file(tmp_path, """
space:
  optimizer.args.lr: {grid: [0.001, 0.002, 0.003]}
scheduler: {type: FIFO}
max_concurrent_trials: 1
""")  # fmt: skip
    command = [
        sys.executable,
        "tune.py",
        "-c",
        CONFIG,
        "-s",
        str(path),
        *shrunk(tmp_path / "saved"),
    ]
    search_dir = tmp_path / "saved" / "search" / "Mnist_LeNet" / "search"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    driver = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        # Trials run one at a time: the second one's run directory means the first has ended.
        models = search_dir / "models" / "Mnist_LeNet"
        wait_until(lambda: models.is_dir() and len(list(models.iterdir())) >= 2, driver,
                   "a second trial")  # fmt: skip
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        driver.wait()
    first = trial_runs(search_dir)[0]
    saved = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in first.glob("*.pth")}
    assert "checkpoint-epoch2.pth" in saved

    resumed = subprocess.run([*command, "--resume"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in first.glob("*.pth")} == saved
    rows = read_trials(search_dir)
    assert sorted(float(row["optimizer.args.lr"]) for row in rows) == [0.001, 0.002, 0.003]
    assert [row["status"] for row in rows] == ["finished"] * 3
    assert [row["epochs"] for row in rows] == ["2"] * 3
    assert len(trial_runs(search_dir)) == 3


def test_start_over_a_search_and_resume_of_none_are_refused(tmp_path):
    path = search_file(tmp_path, "space: {optimizer.args.lr: {choice: [0.001]}}")
    base = ["-c", CONFIG, "-s", str(path), *shrunk(tmp_path / "saved")]
    search_dir = tmp_path / "saved" / "search" / "Mnist_LeNet" / "search"
    with pytest.raises(UserError, match=f"^--resume: no search to resume in {search_dir}"):
        tune.main([*base, "--resume"])
    search_dir.mkdir(parents=True)
    with pytest.raises(UserError, match=r"exists; to go on with that search add --resume"):
        tune.main(base)
    assert list(search_dir.iterdir()) == []


def nothing_listening() -> str:
    """HOST:PORT where nothing listens: a port just given by the system, then closed."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize(
    "search, extra, message",
    [
        ("resources_per_trial: {cpu: 100000}", [], "resources_per_trial: {'cpu': 100000, 'gpu': "
         "0} is more than this machine has"),
        ("", ["--address", "NOTHING"], "--address NOTHING: no Ray cluster answers there "
         "(Connection refused); start one with `ray start --head`"),
        ("", ["--address", "nowhere"], "--address: 'nowhere' is not valid; expected auto, "
         "HOST:PORT"),
    ],
)  # fmt: skip
def test_a_search_that_cannot_start_is_refused_before_anything_is_written(
    tmp_path, capsys, search, extra, message
):
    """Without these checks the first left its search directory behind, and the second did
    not end within 120 s (Ray retries an address for minutes)."""
    address = nothing_listening()
    path = search_file(tmp_path, f"space: {{optimizer.args.lr: {{choice: [0.001]}}}}\n{search}")
    argv = ["-c", CONFIG, "-s", str(path), *shrunk(tmp_path / "saved"),
            *[part.replace("NOTHING", address) for part in extra]]  # fmt: skip
    assert_refused(tune.main, argv, capsys, message.replace("NOTHING", address))
    assert not (tmp_path / "saved").exists()


def test_a_mistake_of_the_base_config_is_its_own_line_not_one_per_space(tmp_path, capsys):
    """A class argument the base config gets wrong is said once, as `train.py -c` says it,
    and not blamed on the search file once per searched key."""
    path = search_file(tmp_path, """
space:
  optimizer.args.lr: {choice: [0.001, 0.01]}
  trainer.epochs: {choice: [1, 2]}
""")  # fmt: skip
    argv = ["-c", CONFIG, "-s", str(path), *shrunk(tmp_path / "saved"), "-o", "arch.args.widht=8"]
    code, stderr = run_in_process(tune.main, argv, capsys)
    assert (code, stderr.count("\n")) == (2, 1), stderr
    assert stderr.startswith("error: arch.args.widht: LeNet takes no argument 'widht'; did you "
                             "mean 'width'?")  # fmt: skip
    assert "search file" not in stderr
    assert not (tmp_path / "saved").exists()


@pytest.mark.parametrize("bounds", ["[8, 16]", "[8.0, 16.0]"])
def test_uniform_bounds_written_as_integers_are_floats_an_int_argument_refuses(tmp_path, bounds):
    """uniform draws floats whatever its bounds are written as: a trial of `[8, 16]` would
    get 11.3 for LeNet's width, an int, and fail inside Ray; it is refused before."""
    path = search_file(tmp_path, f"space: {{arch.args.width: {{uniform: {bounds}}}}}")
    args = tune.parse_args(["-c", CONFIG, "-s", str(path), *shrunk(tmp_path)])
    with pytest.raises(UserError) as caught:
        load_search(path, lambda extra: tune.check_values(args, extra))
    note = " (uniform draws floats; randint draws integers)" if "." not in bounds else ""
    assert str(caught.value).startswith(
        f"search file {path}: space.arch.args.width: the value 8.0{note} is refused: "
        "arch.args.width: 8.0 is a float; LeNet takes int"
    )


def test_an_address_from_ray_address_is_named_as_such(tmp_path, capsys, monkeypatch):
    address = nothing_listening()
    monkeypatch.setenv("RAY_ADDRESS", address)
    path = search_file(tmp_path, "space: {optimizer.args.lr: {choice: [0.001]}}")
    argv = ["-c", CONFIG, "-s", str(path), *shrunk(tmp_path / "saved")]
    assert_refused(tune.main, argv, capsys, f"RAY_ADDRESS {address}: no Ray cluster answers",
                   "or leave out RAY_ADDRESS")  # fmt: skip
    assert not (tmp_path / "saved").exists()


def start_search(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, list[str], Path]:
    """tune.py over a grid of two 3-epoch trials, one at a time, in the background (its
    output in files under tmp_path): the process, its command, and the search directory."""
    path = search_file(tmp_path, """
space:
  optimizer.args.lr: {grid: [0.001, 0.003]}
scheduler: {type: FIFO}
max_concurrent_trials: 1
""")  # fmt: skip
    command = [sys.executable, "tune.py", "-c", CONFIG, "-s", str(path),
               *shrunk(tmp_path / "saved"), "-o", "trainer.epochs=3", *extra]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=stdout, stderr=stderr)
    return process, command, tmp_path / "saved" / "search" / "Mnist_LeNet" / "search"


def stopped_output(process: subprocess.Popen, tmp_path: Path, signum: int) -> list[str]:
    """Send `signum`, wait for the end: its stderr lines, but Ray's start-up warnings."""
    process.send_signal(signum)
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"tune.py did not end within 120 s of {signal.Signals(signum).name}")
    lines = (tmp_path / "stderr").read_text().splitlines()
    return [line for line in lines if "WARNING authentication_token_setup" not in line]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_a_running_search_with_one_line_and_it_resumes(tmp_path, signum):
    """Once trials run: a second `--resume` is refused (it once trained the trials again,
    trials.csv then showing other values than the runs had); the signal saves the search and
    ends it with 128 + the signal and one line (SIGTERM once gave codes 15, -6 or -15 and a
    native stack dump). Resumed (after SIGTERM; SIGINT's stop is the same), it ends with
    each trial's own values in trials.csv."""
    process, command, search_dir = start_search(tmp_path)
    models = search_dir / "models" / "Mnist_LeNet"
    wait_for("*/checkpoint-epoch1.pth", models, process)
    second = subprocess.run([*command, "--resume"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
    assert f"search directory {search_dir} is in use by pid {process.pid}" in second.stderr

    lines = stopped_output(process, tmp_path, signum)
    name = signal.Signals(signum).name
    assert process.returncode == 128 + signum, lines
    assert lines == [f"stopped by {name}; to resume: python {' '.join(command[1:])} --resume"]
    if signum == signal.SIGINT:
        return
    resumed = subprocess.run([*command, "--resume"], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    rows = read_trials(search_dir)
    assert [row["status"] for row in rows] == ["finished"] * 2
    assert [row["trial_id"] for row in rows] == sorted(row["trial_id"] for row in rows)
    for row in rows:
        config = json.loads((Path(row["run_dir"]) / "config.json").read_text())
        assert float(row["optimizer.args.lr"]) == config["optimizer"]["args"]["lr"]


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(2))
def test_a_stop_signal_while_ray_starts_is_one_line(tmp_path, attempt):
    """SIGTERM just after the search directory is made, while Ray starts: Ray's handlers
    once exited 15 without a word, or dumped a native stack and aborted (exit 134)."""
    process = start_search(tmp_path)[0]
    wait_until(lambda: "search directory:" in (tmp_path / "stdout").read_text(), process,
               "the search directory")  # fmt: skip
    lines = stopped_output(process, tmp_path, signal.SIGTERM)
    assert process.returncode == 143, lines
    assert len(lines) == 1 and lines[0].startswith("stopped by SIGTERM"), lines


@pytest.mark.slow
def test_a_bad_search_file_is_exit_2_and_one_line(tmp_path):
    bad = search_file(tmp_path, "space: {optimizer.args.lr: {between: [1, 2]}}")
    refused = run_script("tune.py", "-c", CONFIG, "-s", str(bad), *shrunk(tmp_path / "saved"))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith(
        f"error: search file {bad}: space.optimizer.args.lr: unknown space kind 'between'"
    )
    assert not (tmp_path / "saved").exists()


# ---------------------------------------------------------------- on a cluster

LOOPBACK = "127.0.0.2"  # Ray rewrites 127.0.0.1 and localhost to the machine's network address


@pytest.fixture
def two_node_cluster(monkeypatch):
    """A Ray cluster of two nodes, one CPU each, started here with `ray start` (head, then a
    worker node joining it), both on the loopback address, with one authentication token
    (RAY_AUTH_MODE, RAY_AUTH_TOKEN, which tune.py gets too); its address. Every process of
    it is killed afterwards, whatever happened (by its temporary directory, which no other
    Ray on this machine shares)."""
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(16))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"{LOOPBACK}:{probe.getsockname()[1]}"
    ray = str(Path(sys.executable).parent / "ray")
    common = ["--node-ip-address", LOOPBACK, "--num-cpus", "1", "--temp-dir", str(temp),
              "--disable-usage-stats"]  # fmt: skip
    try:
        head = ["--head", "--port", address.rpartition(":")[2], "--include-dashboard", "false"]
        for role in (head, ["--address", address]):
            started = subprocess.run([ray, "start", *role, *common], capture_output=True,
                                     text=True, timeout=180)  # fmt: skip
            assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        yield address
    finally:
        for pid in processes_of(str(temp)):
            with contextlib.suppress(ProcessLookupError):  # it ended since it was listed
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def processes_of(marker: str) -> set[int]:
    """The processes whose command line holds `marker`, and all their descendants (Ray's agents
    rename themselves, `ray::DashboardAgent`)."""
    parents, found = {}, set()
    for process in Path("/proc").iterdir():
        try:
            parents[int(process.name)] = int(
                (process / "stat").read_text().rsplit(")", 1)[1].split()[1]
            )
            if marker.encode() in (process / "cmdline").read_bytes():
                found.add(int(process.name))
        except (OSError, ValueError, IndexError):
            continue
    grown = True
    while grown:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= children
        grown = bool(children)
    return found


def cluster_nodes(address: str) -> list[tuple[str, bool, float]]:
    """(address, alive, CPUs) of each node of the cluster at `address`, as Ray lists them."""
    code = (f"import json, ray; ray.init(address={address!r}, _node_ip_address={LOOPBACK!r}, "
            "logging_level='ERROR'); print(json.dumps([(n['NodeManagerAddress'], n['Alive'], "
            "n['Resources'].get('CPU')) for n in ray.nodes()]))")  # fmt: skip
    listed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=True)  # fmt: skip
    return [tuple(node) for node in json.loads(listed.stdout.strip().splitlines()[-1])]


@pytest.mark.slow
def test_a_search_runs_on_a_two_node_cluster_on_the_loopback_and_resumes_there(
    tmp_path, two_node_cluster
) -> None:
    """`tune.py --address HOST:PORT --node-ip-address HOST` on two nodes started with `ray start`:
    Ray lists both nodes at the loopback address, and the trials record it as their node's;
    stopped by SIGTERM, the search resumes on the cluster and ends with both trials
    finished."""
    assert cluster_nodes(two_node_cluster) == [(LOOPBACK, True, 1.0)] * 2
    process, command, search_dir = start_search(
        tmp_path, "--address", two_node_cluster, "--node-ip-address", LOOPBACK
    )
    models = search_dir / "models" / "Mnist_LeNet"
    wait_for("*/checkpoint-epoch1.pth", models, process)
    assert stopped_output(process, tmp_path, signal.SIGTERM)[-1].startswith("stopped by SIGTERM")
    resumed = subprocess.run([*command, "--resume"], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [row["status"] for row in read_trials(search_dir)] == ["finished"] * 2
    for progress in search_dir.glob("ray_*/progress.csv"):
        with open(progress) as file:
            assert {row["node_ip"] for row in csv.DictReader(file)} == {LOOPBACK}
