"""End to end through the real command line: train, resume, fine-tune, test, new project."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import NARROW, ROOT, TrainedRun, load, read_json, run_dir, run_script, shrunk
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_cli_errors import assert_refused, run_in_process

import builder.report
import test as evaluate
import train
from utils.checkpoint.files import CHECKPOINT_KEYS
from utils.distributed import process_group

CONFIG = str(ROOT / "config" / "config.json")


def weights_equal(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_train_writes_run_directory(shrunk_run: TrainedRun) -> None:
    assert "\r" not in shrunk_run.stderr + shrunk_run.stdout  # not a terminal: no progress bars
    models = shrunk_run.models
    log = shrunk_run.save_dir / "log" / "Mnist_LeNet" / models.name
    names = {p.name for p in models.iterdir()}
    assert {
        "config.json",
        "checkpoint-epoch1.pth",
        "checkpoint-epoch2.pth",
        "model_best.pth",
    } <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert "epoch 2/2" in (log / "info.log").read_text()
    assert list(log.glob("events.out.tfevents.*"))

    config = read_json(models / "config.json")
    assert config["trainer"]["epochs"] == 2 and config["trainer"]["len_epoch"] == 3
    assert config["trainer"]["keep_last"] is None  # defaults are written out
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip() or "unknown"  # fmt: skip
    assert config["code_version"]["commit"] == head
    assert isinstance(config["code_version"]["dirty"], bool)

    checkpoint = load(models / "checkpoint-epoch2.pth")  # weights_only=True
    assert set(CHECKPOINT_KEYS) <= set(checkpoint)
    assert checkpoint["arch"] == "LeNet"
    assert (checkpoint["epoch"], checkpoint["step"]) == (2, 6)
    assert checkpoint["config"] == config
    assert not [k for k in checkpoint["state_dict"] if k.startswith(("module.", "_orig_mod."))]
    assert checkpoint["lr_scheduler"]["last_epoch"] == 2


def test_tensorboard_has_scalars_images_histograms(tmp_path: Path, shrunk_overrides) -> None:
    result = run_script("train.py", "-c", CONFIG, *shrunk_overrides, "-o", "trainer.log_step=1")
    assert result.returncode == 0, result.stderr
    log = tmp_path / "saved" / "log" / "Mnist_LeNet" / run_dir(tmp_path / "saved").name
    events = EventAccumulator(str(log), size_guidance={"scalars": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    for name in ("loss", "accuracy", "top_k_acc", "lr"):
        assert f"train/{name}" in scalars
        assert f"epoch/{name}" in scalars
    assert {"epoch/val_loss", "epoch/val_accuracy", "epoch/val_top_k_acc"} <= scalars
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events.Scalars("epoch/val_loss")] == [3, 6]
    assert "train/input" in events.Tags()["images"]
    assert any(tag.startswith("parameters/conv1") for tag in events.Tags()["histograms"])


@pytest.mark.slow
def test_resume_is_the_same_run(tmp_path: Path, shrunk_overrides: list[str]) -> None:
    """Resuming after epoch 1 lands on exactly the weights of the uninterrupted run, in the
    same run directory, with the schedule's learning rate. Whole epochs (no `len_epoch`):
    an iteration-based epoch ends mid-pass, a position the checkpoint does not hold."""
    schedule = [
        "-o",
        "lr_scheduler.args.step_size=1",
        "-o",
        "lr_scheduler.args.gamma=0.5",
        "-o",
        "trainer.len_epoch=null",
        "-o",
        "data_loader.args.batch_size=256",
        "-o",
        NARROW,
    ]
    result = run_script("train.py", "-c", CONFIG, *shrunk_overrides, *schedule)
    assert result.returncode == 0, result.stderr
    models = run_dir(tmp_path / "saved")
    # The finished run: `epochs` is the total, so resuming it with 2 (or fewer) is refused,
    # the run directory untouched.
    config_before = (models / "config.json").read_bytes()
    for epochs in ("2", "1"):
        refused = run_script("train.py", "-r", str(models), "-o", f"trainer.epochs={epochs}")
        assert refused.returncode == 2
        assert refused.stderr.startswith(f"error: trainer.epochs: {epochs} is the total number")
        assert (
            "has completed 2" in refused.stderr and "trainer.epochs=N with N > 2" in refused.stderr
        )
    assert (models / "config.json").read_bytes() == config_before
    uninterrupted = load(models / "checkpoint-epoch2.pth")
    (models / "checkpoint-epoch2.pth").rename(tmp_path / "uninterrupted.pth")

    result = run_script("train.py", "-r", str(models / "checkpoint-epoch1.pth"))
    assert result.returncode == 0, result.stderr
    assert run_dir(tmp_path / "saved") == models  # no new run directory
    resumed = load(models / "checkpoint-epoch2.pth")
    assert (resumed["epoch"], resumed["step"]) == (2, 2 * 15)  # 3,600 images / 256 per batch
    assert resumed["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.001 * 0.5**2)
    assert weights_equal(resumed["state_dict"], uninterrupted["state_dict"])
    log = (tmp_path / "saved" / "log" / "Mnist_LeNet" / models.name / "info.log").read_text()
    assert f"resuming after epoch 1 of 2 (step 15), from {models}" in log
    assert len(re.findall(r"epoch 2/2", log)) == 2  # once per attempt, both in one log
    # One TensorBoard curve: the first attempt's epoch 2 is purged, the resumed one continues.
    events = EventAccumulator(str(tmp_path / "saved" / "log" / "Mnist_LeNet" / models.name))
    assert [e.step for e in events.Reload().Scalars("epoch/loss")] == [15, 30]


@pytest.mark.slow
def test_same_seed_gives_same_weights(tmp_path: Path, shrunk_overrides: list[str]) -> None:
    for run_id in ("first", "second"):
        result = run_script("train.py", "-c", CONFIG, *shrunk_overrides, "--run-id", run_id)
        assert result.returncode == 0, result.stderr
    models = tmp_path / "saved" / "models" / "Mnist_LeNet"
    first = load(models / "first" / "checkpoint-epoch2.pth")["state_dict"]
    second = load(models / "second" / "checkpoint-epoch2.pth")["state_dict"]
    assert weights_equal(first, second)


def test_fine_tune_starts_new_run_from_weights(
    tmp_path: Path, shrunk_overrides, shrunk_run: TrainedRun
) -> None:
    base = shrunk_run.models / "checkpoint-epoch2.pth"
    result = run_script("train.py", "-c", CONFIG, "-r", str(base), *shrunk_overrides,
                        "-o", "trainer.epochs=1", "--lr", "0", "--run-id", "tuned")  # fmt: skip
    assert result.returncode == 0, result.stderr
    tuned_dir = tmp_path / "saved" / "models" / "Mnist_LeNet" / "tuned"
    tuned = load(tuned_dir / "checkpoint-epoch1.pth")
    assert tuned["epoch"] == 1 and tuned["config"]["optimizer"]["args"]["lr"] == 0
    # With lr 0 the trained weights cannot move: they are the loaded ones.
    before = load(base)["state_dict"]
    assert all(torch.equal(before[k], tuned["state_dict"][k]) for k in before if "weight" in k)


@pytest.mark.slow
def test_test_script_evaluates_a_run_directory_one_file_per_checkpoint(
    tmp_path: Path, shrunk_run: TrainedRun
) -> None:
    assert f"to evaluate: python test.py -r {shrunk_run.models}\n" in shrunk_run.stdout
    models = shrunk_run.copy_to(tmp_path).models
    # A run directory: its best model.
    result = run_script("test.py", "-r", str(models))
    assert result.returncode == 0, result.stderr
    metrics = read_json(models / "model_best.test_metrics.json")
    assert metrics["checkpoint"] == "model_best.pth" and metrics["n_samples"] == 1000
    assert metrics["weights"] == "state_dict"  # (no EMA hook: the model's own)
    assert set(metrics) >= {"loss", "accuracy", "top_k_acc"}
    assert 0.0 <= metrics["accuracy"] <= metrics["top_k_acc"] <= 1.0
    assert f"{metrics['accuracy']:.6g}" in result.stdout
    # Without a best model: the newest checkpoint, into a file of its own; the values stand in
    # one column after the longest name.
    (models / "model_best.pth").rename(tmp_path / "model_best.pth")
    named = "metrics=[accuracy, {type: top_k_acc, name: top_3_of_the_classes}]"
    result = run_script("test.py", "-r", str(models), "-o", named)
    assert result.returncode == 0, result.stderr
    assert read_json(models / "checkpoint-epoch2.test_metrics.json")["step"] == 6
    names = ("loss", "accuracy", "top_3_of_the_classes", "n_samples")
    lines = [line for line in result.stdout.splitlines() if line.split(" ")[0] in names]
    assert len(lines) == 4 and {line.rindex(" ") for line in lines} == {20}
    assert read_json(models / "model_best.test_metrics.json") == metrics  # not overwritten


def test_without_the_reports_unit_test_py_writes_the_metrics_alone(
    tmp_path: Path, shrunk_run: TrainedRun, monkeypatch, capsys
) -> None:
    """A copy made without logger/reports/ (the reports unit): the metrics, no report and no
    pictures; `--worst` is not an option, and a report named in the config is refused."""
    for module in (evaluate, builder.report):
        monkeypatch.setattr(module, "reports_available", lambda: False)
    models = shrunk_run.copy_to(tmp_path).models
    assert run_in_process(evaluate.main, ["-r", str(models)], capsys)[0] == 0
    metrics = read_json(models / "model_best.test_metrics.json")
    assert {"loss", "accuracy", "n_samples"} <= set(metrics) and "report" not in metrics
    assert not list(models.glob("*.png"))
    assert_refused(evaluate.main, ["-r", str(models), "--worst", "3"], capsys, "--worst")
    named = ["-r", str(models), "-o", "test.report=regression"]
    why = ["test.report: 'regression'", "no logger/reports/", "'auto' or 'none'"]
    assert_refused(evaluate.main, named, capsys, *why)


def test_without_the_distributed_unit_torchrun_is_refused_and_slurm_names_nothing(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """A copy made without the distributed unit: a process torchrun started is refused in one
    line before anything is written (each would train alone, all writing one run), and a
    SLURM job's id neither names the run nor makes it a job that continues or requeues."""
    monkeypatch.setattr(process_group, "has_unit", lambda module: False)
    monkeypatch.setattr(train, "job", None)
    save_dir = tmp_path / "saved"
    argv = ["-c", str(ROOT / "config" / "config.json"), "-o", f"trainer.save_dir={save_dir}"]
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert train.parse_args(argv).run_id is None  # (a timestamp, when the run starts)
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    why = ["torchrun: this copy has no utils/distributed/launch.py", "WITH=distributed",
           "python train.py"]  # fmt: skip
    assert_refused(train.main, argv, capsys, *why)
    assert not save_dir.exists()


ENDING = """
import atexit, sys
from pathlib import Path
from utils.distributed.process_group import end_process

class TornDown:
    def __init__(self, path):
        self.path, self.open = path, open  # (the teardown has cleared the builtins by then)

    def __del__(self):
        self.open(self.path, "w").close()

held = TornDown(str(Path(sys.argv[1], "torn down")))  # a global: deleted in the teardown
atexit.register(Path(sys.argv[1], "exit handlers ran").touch)
print("the run's last line", end="")  # a pipe: buffered until the streams are flushed
end_process(3)
"""


@pytest.mark.parametrize("torchrun", [False, True])
def test_a_torchrun_rank_ends_without_the_interpreter_teardown(tmp_path: Path, torchrun) -> None:
    """Under torchrun, a rank skips the teardown, where gloo's threads can abort it (a finished
    run reported failed, and started again); what any exit gives is kept: the code, the
    buffered output, the exit handlers (logging's, W&B's). A plain process tears down."""
    env = {**os.environ, "LOCAL_RANK": "0", "WORLD_SIZE": "1"} if torchrun else None
    command = [sys.executable, "-c", ENDING, str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (3, "the run's last line", "")
    ran = {p.name for p in tmp_path.iterdir()}
    assert ran == ({"exit handlers ran"} if torchrun else {"exit handlers ran", "torn down"})


SIGNALLED_ENDING = """
import atexit, os, signal, sys
from pathlib import Path
from utils.distributed.process_group import end_process
from utils.stop_signals import exit_on_stop_signals

exit_on_stop_signals("in the test")  # (train.py's: a stop signal raises SystemExit)
atexit.register(Path(sys.argv[1], "exit handlers ran").touch)
atexit.register(os.kill, os.getpid(), signal.SIGTERM)  # (first: torchrun ending the rank)
end_process(3)
"""


def test_a_stop_signal_while_a_torchrun_rank_ends_changes_nothing(tmp_path: Path) -> None:
    """torchrun ends the other ranks of a failed one with SIGTERM; one that is already ending
    keeps its code and its quiet stderr (the stop raised inside an exit handler, as a
    traceback), and its other exit handlers still run."""
    env = {**os.environ, "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
    command = [sys.executable, "-c", SIGNALLED_ENDING, str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (3, "")
    assert (tmp_path / "exit handlers ran").exists()


def test_a_finished_run_copied_without_its_log_resumes_with_the_printed_command(
    tmp_path: Path, shrunk_run: TrainedRun
) -> None:
    """The printed command runs as pasted; a run directory copied to a new id (its log
    directory left behind) gets a fresh log directory."""
    (command,) = [line for line in shrunk_run.stdout.splitlines() if "to train longer" in line]
    assert "trainer.epochs is the total, so any N > 2" in command
    argv = command.split(": python ", 1)[1].split()
    assert argv == ["train.py", "-r", str(shrunk_run.models), "-o", "trainer.epochs=4"]
    save_dir = shrunk_run.copy_to(tmp_path).save_dir
    copied = save_dir / "models" / "Mnist_LeNet" / "copied"
    shutil.copytree(run_dir(save_dir), copied)
    result = run_script(argv[0], "-r", str(copied), *argv[3:])
    assert result.returncode == 0, result.stderr
    assert load(copied / "checkpoint-epoch4.pth")["epoch"] == 4
    assert "epoch 4/4" in (save_dir / "log" / "Mnist_LeNet" / "copied" / "info.log").read_text()


@pytest.mark.slow
def test_a_run_stopped_early_prints_a_command_that_trains_on(tmp_path: Path) -> None:
    """Resumed as it is, an early-stopped run would stop again at once (its count of epochs
    without improvement is restored): the printed command turns early stopping off."""
    early = [
        "-o",
        "trainer.epochs=4",
        "-o",
        "trainer.monitor=max val_loss",
        "-o",
        "trainer.early_stop=1",
    ]  # val_loss falls, so epoch 2 does not "improve"
    result = run_script("train.py", "-c", CONFIG, *shrunk(tmp_path / "saved"), *early)
    assert result.returncode == 0, result.stderr
    assert "stopping early" in result.stdout and "epoch 3/4" not in result.stdout
    (command,) = [line for line in result.stdout.splitlines() if "to train on" in line]
    argv = command.split(": python ", 1)[1].split()
    assert "to train longer" not in result.stdout
    result = run_script(*argv)
    assert result.returncode == 0, result.stderr
    assert "epoch 4/4" in result.stdout
    # Early stopping at the last epoch: the command that trains longer turns it off too.
    last = [*early[:-1], "trainer.early_stop=1", "-o", "trainer.epochs=2"]
    result = run_script("train.py", "-c", CONFIG, *shrunk(tmp_path / "last"), *last)
    assert result.returncode == 0, result.stderr
    (command,) = [line for line in result.stdout.splitlines() if "to train longer" in line]
    assert command.endswith("-o trainer.epochs=4 -o trainer.early_stop=0")


@pytest.mark.slow
def test_a_one_cycle_run_prints_a_command_that_trains_longer(tmp_path: Path) -> None:
    """A one-cycle schedule's length is fixed when it starts, so resuming with more epochs is
    refused: the printed command fine-tunes the last weights with a new cycle instead."""
    one_cycle = "lr_scheduler={type: OneCycleLR, args: {max_lr: 0.003}}"
    result = run_script("train.py", "-c", CONFIG, *shrunk(tmp_path / "saved"), "-o", one_cycle)
    assert result.returncode == 0, result.stderr
    (command,) = [line for line in result.stdout.splitlines() if "to train longer" in line]
    argv = command.split(": python ", 1)[1].split()
    assert argv[:2] == ["train.py", "-c"] and "-r" in argv
    result = run_script(*argv)
    assert result.returncode == 0, result.stderr
    assert "fine-tuning the weights of" in result.stdout and "epoch 2/2" in result.stdout


def test_the_installed_project_claims_no_top_level_names(tmp_path: Path) -> None:
    """`pip install -e .` installs the dependencies only: outside the project root, none of
    its packages is importable, so two projects made from the template cannot collide."""
    names = ["base", "builder", "data_loader", "logger", "model", "trainer", "utils"]
    probe = (
        "import importlib.util, sys\n"
        f"for name in {names!r}:\n"
        "    spec = importlib.util.find_spec(name)\n"
        "    where = spec and (spec.origin or list(spec.submodule_search_locations))\n"
        f"    if where and {str(ROOT)!r} in str(where): print(name, where)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


HEAVY = {"torchmetrics", "torchvision", "torch.distributed.fsdp", "torch.distributed.checkpoint"}


# Runs train.py as `python train.py` would, noting each module as it is first imported and
# whether a module of the project's models or loaders was importing it (on the stack).
IMPORTS_PROBE = """
import json, runpy, sys
from pathlib import Path

class Recorder:
    def __init__(self, users):
        self.users, self.seen = users, {}

    def find_spec(self, name, path=None, target=None):
        if name not in self.seen:
            frame = sys._getframe(1)
            while frame is not None and not frame.f_code.co_filename.startswith(self.users):
                frame = frame.f_back
            self.seen[name] = frame is not None
        return None

recorder = Recorder(tuple(str(Path.cwd() / part) + "/" for part in ("model", "data_loader")))
sys.meta_path.insert(0, recorder)
output, sys.argv = sys.argv[1], ["train.py", *sys.argv[2:]]
try:
    runpy.run_path("train.py", run_name="__main__")
finally:
    Path(output).write_text(json.dumps(recorder.seen))
"""


def imported_by(output: Path, *args: str) -> dict[str, bool]:
    """The modules `python train.py ARGS` imports, each with whether the project's own
    models, loaders, losses or metrics imported it (which are theirs to choose: a metric that
    subclasses `torchmetrics.Metric` in model/metric.py, as the README says)."""
    result = subprocess.run([sys.executable, "-c", IMPORTS_PROBE, str(output), *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(output.read_text())


def framework_imports(modules: dict[str, bool]) -> set[str]:
    """The heavy modules among `modules` that the framework's own code imported."""
    return {name for name in HEAVY & set(modules) if not modules[name]}


@pytest.mark.slow
def test_the_libraries_a_run_does_not_use_are_not_imported(tmp_path: Path) -> None:
    """`--help` imports none of them (nor the project's model modules), and the default run
    (metric functions, one process, the template's every model module looked up) neither
    torchmetrics, nor torchvision, nor the gathering of sharded states: each costs up to a
    second or more at every start. (FSDP's own modules come with torch.optim's first
    optimizer, which imports torch's compiler.)"""
    started = imported_by(tmp_path / "help.json", "--help")
    users = [name for name in started if name.startswith(("model.", "data_loader."))]
    assert not HEAVY & set(started) and not users
    run = imported_by(tmp_path / "run.json", "-c", "config/config.json",
                      *shrunk(tmp_path / "saved"), "-o", "trainer.epochs=1",
                      "-o", "trainer.len_epoch=1")  # fmt: skip
    assert "torch.optim" in run and not framework_imports(run) - {"torch.distributed.fsdp"}


def test_the_printed_commands_keep_the_device_the_run_was_given(tmp_path: Path, capsys) -> None:
    """`-d cpu` on a machine with a GPU: a command that dropped it would go on on the GPU."""
    save_dir = tmp_path / "saved"
    argv = ["-c", "config/config.json", *shrunk(save_dir), "-o", "trainer.epochs=1", "-d", "cpu"]
    code, _ = run_in_process(train.main, argv, capsys)
    assert code == 0
    (log,) = save_dir.rglob("info.log")
    models = run_dir(save_dir)
    assert f"to evaluate: python test.py -d cpu -r {models}\n" in log.read_text()
    assert f"python train.py -d cpu -r {models} -o trainer.epochs=2\n" in log.read_text()
