"""Losing nothing: mid-epoch exact resume, stop signals, resuming a run directory, safe loads."""

import errno
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import (
    NARROW,
    ROOT,
    assert_same_run,
    assert_same_state,
    computed_once,
    epoch_lines,
    load,
    make_trainer,
    run_dir,
    run_script,
    wait_for,
    wait_until,
)
from forked_scripts import ScriptProcess, start_script

from base import TensorDataLoader
from utils.checkpoint.files import load_checkpoint
from utils.config.check import resolve_config
from utils.errors import TrainingFailed, UserError
from utils.run.dirs import create_run_dirs

CONFIG = str(ROOT / "config" / "config.json")


def overrides(save_dir: Path, workers: int, *extra: str) -> list[str]:
    """Two whole epochs of 15 batches (3,600 images, batches of 256), step checkpoints."""
    options = [
        f"trainer.save_dir={save_dir}", "trainer.epochs=2", "trainer.progress_bar=false",
        f"data_loader.args.data_dir={ROOT / 'data'}", "data_loader.args.batch_size=256", NARROW,
        *extra,
    ]  # fmt: skip
    if workers:  # the DataLoader-based loader, with worker processes
        options += ["data_loader.type=Mnist5kDataLoader", f"data_loader.args.num_workers={workers}"]
    return [item for option in options for item in ("-o", option)]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_resume_from_the_middle_of_an_epoch_is_exact(tmp_path: Path, workers: int) -> None:
    """Resumed from a step checkpoint in epoch 1 or in epoch 2, the run ends bit for bit
    where the uninterrupted run ended, with the same logged values: means, and a macro F1
    computed from its torchmetrics state (saved in the step checkpoint)."""
    f1 = {"type": "MulticlassF1Score", "args": {"num_classes": 10, "average": "macro"}}
    options = overrides(tmp_path / "saved", workers, "trainer.save_every_steps=11",
                        f"metrics={json.dumps(['accuracy', f1])}")  # fmt: skip
    result = run_script("train.py", "-c", CONFIG, *options)
    assert result.returncode == 0, result.stderr
    logged = epoch_lines(result.stdout)
    assert " MulticlassF1Score " in logged["1/2"] and " val_MulticlassF1Score " in logged["2/2"]
    models = run_dir(tmp_path / "saved")
    assert sorted(p.name for p in models.glob("checkpoint-step*.pth")) == [
        "checkpoint-step11.pth",
        "checkpoint-step22.pth",
    ]  # fmt: skip  (only the newest two are kept)
    uninterrupted = load(models / "checkpoint-epoch2.pth")
    for step, epoch, batches_done in ((11, 0, 11), (22, 1, 7)):
        state = load(models / f"checkpoint-step{step}.pth")
        assert (state["step"], state["epoch"], state["batches_done"]) == (step, epoch, batches_done)
        shutil.copytree(tmp_path / "saved", tmp_path / f"from_step{step}")
        copy = run_dir(tmp_path / f"from_step{step}")
        result = run_script("train.py", "-r", str(copy / f"checkpoint-step{step}.pth"), *options)
        assert result.returncode == 0, result.stderr
        where = f"in epoch {epoch + 1} of 2, after {batches_done} of its 15 batches (step {step})"
        assert f"resuming {where}, from {copy}" in result.stdout
        resumed = load(copy / "checkpoint-epoch2.pth")
        assert resumed["step"] == uninterrupted["step"] == 30
        assert_same_run(resumed, uninterrupted)
        resumed_lines = epoch_lines(result.stdout)
        assert resumed_lines and all(logged[e] == line for e, line in resumed_lines.items())


SMALL_BATCHES = ("data_loader.args.batch_size=32",)  # 2 epochs of 113 steps


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """The last checkpoint of a run never interrupted, with SMALL_BATCHES: what every stopped,
    killed and resumed run of this module must end with (step checkpoints change nothing)."""

    def train(save_dir: Path) -> None:
        result = run_script("train.py", "-c", CONFIG, *overrides(save_dir, 0, *SMALL_BATCHES))
        assert result.returncode == 0, result.stderr

    save_dir = computed_once(tmp_path_factory, "uninterrupted", train)
    return load(run_dir(save_dir) / "checkpoint-epoch2.pth")


def start(*args: str) -> ScriptProcess:
    """train.py with `args` in the background, on the CPU, its output captured."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    pipe = subprocess.PIPE
    return start_script(["train.py", *args], cwd=ROOT, env=env, stdout=pipe, stderr=pipe)


def start_training(save_dir: Path, *extra: str) -> ScriptProcess:
    return start("-c", CONFIG, *overrides(save_dir, 0, *SMALL_BATCHES, *extra))


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.slow
def test_stop_signal_saves_and_the_resumed_run_is_the_same_run(
    tmp_path, signum, code, uninterrupted
) -> None:
    """A signal mid-epoch: the step finishes, a checkpoint is written, the exit code is
    128 + the signal; `-r RUN_DIR` then ends with the weights of an uninterrupted run."""
    process = start_training(tmp_path / "saved", "trainer.save_every_steps=3")
    wait_for("models/*/*/checkpoint-step3.pth", tmp_path / "saved", process)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr
    models = run_dir(tmp_path / "saved")
    assert f"to resume: python train.py -r {models}\n" in stdout
    assert not list(models.glob("*.tmp"))
    stopped_at = max(load(p)["step"] for p in models.glob("checkpoint-*.pth"))
    assert 3 < stopped_at < 2 * 113, "stopped in the middle of the run, after its own save"

    result = run_script("train.py", "-r", str(models), "-o", "trainer.save_every_steps=null")
    assert result.returncode == 0, result.stderr
    assert_same_run(load(models / "checkpoint-epoch2.pth"), uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(3))
def test_a_stop_mid_epoch_with_loader_workers_exits(tmp_path: Path, attempt: int) -> None:
    """Epochs of `len_epoch` batches leave the loader's iterator and its two workers mid-pass;
    the workers ignore stop signals, and the stopped run once waited for them forever."""
    options = overrides(tmp_path / "saved", 2, *SMALL_BATCHES, "trainer.len_epoch=40",
                        "trainer.save_every_steps=3")  # fmt: skip
    process = start("-c", CONFIG, *options)
    wait_for("models/*/*/checkpoint-step3.pth", tmp_path / "saved", process)
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("the stopped run did not exit within 120 s")
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr


def test_a_second_signal_stops_at_once_without_a_partial_file(tmp_path: Path) -> None:
    """Two SIGTERMs in a row: exit 143 straight away; whatever is on disk loads."""
    process = start_training(tmp_path / "saved", "trainer.save_every_steps=1")
    wait_for("models/*/*/checkpoint-step3.pth", tmp_path / "saved", process)
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    models = run_dir(tmp_path / "saved")
    assert not [p for p in models.iterdir() if p.name.endswith(".tmp")]
    for path in models.glob("*.pth"):
        load_checkpoint(path)


@pytest.mark.slow
def test_resume_from_a_run_directory_skips_a_corrupt_newest_checkpoint(tmp_path) -> None:
    options = overrides(tmp_path / "saved", 0, "trainer.save_period=1")
    assert run_script("train.py", "-c", CONFIG, *options).returncode == 0
    models = run_dir(tmp_path / "saved")
    newest = models / "checkpoint-epoch2.pth"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a full disk
    result = run_script("train.py", "-r", str(models), "-o", "trainer.epochs=3")
    assert result.returncode == 0, result.stderr
    assert "checkpoint-epoch2.pth" in result.stderr and "skipping" in result.stderr
    assert "resuming after epoch 1" in result.stdout
    assert "config changed on resume: trainer.epochs: 2 -> 3" in result.stdout
    assert json.loads((models / "config.json").read_text())["trainer"]["epochs"] == 3
    assert load(models / "checkpoint-epoch3.pth")["epoch"] == 3


class Payload:
    """Pickles into a call that would create a file, were it ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_carrying_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "extra": Payload(marker)}, path)
    with pytest.raises(UserError, match=r"evil\.pth: not a readable checkpoint"):
        load_checkpoint(path)
    result = run_script("train.py", "-r", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert not marker.exists()


# ---------------------------------------------------------------- non-finite losses


def toy_trainer(tmp_path: Path, nan_batches: list[int], dropout: float = 0.0, **options):
    """A linear model (after a dropout, if any) over 6 unshuffled batches of 4; the listed
    batches hold a NaN input."""
    torch.manual_seed(0)
    inputs, targets = torch.randn(24, 3), torch.randint(2, (24,))
    for batch in nan_batches:
        inputs[batch * 4] = float("nan")
    model = torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(3, 2))
    config = resolve_config({
        "name": "nan", "arch": {"type": "Linear"}, "data_loader": {"type": "None"},
        "optimizer": {"type": "SGD"}, "loss": "cross_entropy",
        "trainer": {"epochs": 1, "progress_bar": False, "tensorboard": False, **options},
    })  # fmt: skip
    loader = TensorDataLoader((inputs, targets), 4, shuffle=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = make_trainer(model, torch.nn.functional.cross_entropy, optimizer, config, loader)
    return trainer, create_run_dirs(tmp_path, "nan", "run")


def test_nonfinite_skip_drops_only_the_bad_updates(tmp_path: Path) -> None:
    trainer, run_dirs = toy_trainer(tmp_path, [2, 4], on_nonfinite="skip")
    trainer.train(run_dirs)
    assert trainer.step == 4  # 6 batches, 2 updates dropped
    assert all(torch.isfinite(p).all() for p in trainer.bare_model.parameters())
    checkpoint = load(run_dirs.models / "checkpoint-epoch1.pth")
    assert checkpoint["step"] == 4


def test_nonfinite_skip_gives_up_after_max_skipped_in_a_row(tmp_path: Path) -> None:
    trainer, run_dirs = toy_trainer(tmp_path, [1, 2, 3], on_nonfinite="skip", max_skipped=3)
    with pytest.raises(TrainingFailed, match=r"trainer\.max_skipped: 3 updates in a row"):
        trainer.train(run_dirs)
    assert trainer.step == 1


def test_nonfinite_stop_saves_the_last_good_state(tmp_path: Path) -> None:
    trainer, run_dirs = toy_trainer(tmp_path, [3], on_nonfinite="stop", accumulate_steps=2)
    with pytest.raises(TrainingFailed, match=r"non-finite loss at step 2 \(epoch 1, batch 4\)"):
        trainer.train(run_dirs)
    saved = load(run_dirs.models / "checkpoint-step1.pth")
    assert (saved["step"], saved["batches_done"]) == (1, 2)  # the group of batches 3-4 replays
    assert all(torch.isfinite(t).all() for t in saved["state_dict"].values())


def test_a_stop_inside_an_accumulation_group_resumes_as_if_never_stopped(tmp_path) -> None:
    """The saved state is that of the group's start, its random generators included: the
    group's first batch had drawn its dropout mask when the second's loss was found NaN."""
    options = {"on_nonfinite": "stop", "accumulate_steps": 2, "dropout": 0.5}
    stopped, run_dirs = toy_trainer(tmp_path / "stopped", [3], **options)
    with pytest.raises(TrainingFailed):
        stopped.train(run_dirs)
    resumed, resumed_dirs = toy_trainer(tmp_path / "resumed", [], **options)  # the data fixed
    resumed.load_state_dict(load(run_dirs.models / "checkpoint-step1.pth"))
    resumed.train(resumed_dirs)
    whole, whole_dirs = toy_trainer(tmp_path / "whole", [], **options)
    whole.train(whole_dirs)
    assert resumed.step == whole.step == 3
    assert_same_state(resumed.bare_model.state_dict(), whole.bare_model.state_dict())


def test_without_a_check_a_nan_goes_into_the_weights(tmp_path: Path) -> None:
    """The guard is what keeps the weights finite (on_nonfinite null checks nothing)."""
    trainer, run_dirs = toy_trainer(tmp_path, [2])
    trainer.train(run_dirs)
    assert not all(torch.isfinite(p).all() for p in trainer.bare_model.parameters())


# ---------------------------------------------------------------- unwritable and full disks


def test_unwritable_save_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    options = overrides(blocker / "saved", 0)
    result = run_script("train.py", "-c", CONFIG, *options)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: trainer.save_dir: cannot create")
    assert len(result.stderr.strip().splitlines()) == 1


def test_full_disk_stops_cleanly_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    import utils.checkpoint.files

    trainer, run_dirs = toy_trainer(tmp_path, [], epochs=2)
    real_save = torch.save
    calls = []

    def save_then_fill_the_disk(state, file):
        calls.append(file)
        if len(calls) > 1:  # the second checkpoint finds the disk full, half-way through
            file.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(state, file)

    monkeypatch.setattr(utils.checkpoint.files.torch, "save", save_then_fill_the_disk)
    with pytest.raises(TrainingFailed, match="No space left on device"):
        trainer.train(run_dirs)
    monkeypatch.setattr(utils.checkpoint.files.torch, "save", real_save)
    assert load(run_dirs.models / "checkpoint-epoch1.pth")["epoch"] == 1
    assert not (run_dirs.models / "checkpoint-epoch2.pth").exists()
    assert not [p for p in run_dirs.models.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- kill -9


@pytest.mark.slow
def test_kill_9_anywhere_then_resume_ends_bit_for_bit_like_an_uninterrupted_run(
    tmp_path, uninterrupted
) -> None:
    """SIGKILL (no handler can run) on events of the run, not after fixed delays: just after
    a step checkpoint, while one is being written, just after an epoch ends; every resume
    from the run directory finds a readable checkpoint, and the final weights equal those of
    a run never interrupted."""
    save_dir = tmp_path / "saved"
    models = save_dir / "models" / "Mnist_LeNet" / "killed"

    def names() -> set[str]:
        return {entry.name for entry in os.scandir(models)} if models.is_dir() else set()

    def new_file(kind: str) -> Callable[[], bool]:
        before = names()  # a temporary file left by an earlier kill is not new
        return lambda: any(name.endswith(kind) for name in names() - before)

    kill_on = [
        ("a step checkpoint written", lambda: new_file(".pth")),
        ("a checkpoint being written", lambda: new_file(".tmp")),
        ("epoch 1 saved", lambda: lambda: "checkpoint-epoch1.pth" in names()),
        ("a checkpoint being written", lambda: new_file(".tmp")),
        ("a step checkpoint written", lambda: new_file(".pth")),
    ]
    options = overrides(save_dir, 0, *SMALL_BATCHES, "trainer.save_every_steps=2")
    process = start("-c", CONFIG, *options, "-o", "trainer.save_period=1", "--run-id", "killed")
    reached = []
    for what, event in kill_on:
        wait_until(event(), process, what, every=0.001)  # a checkpoint being written
        process.kill()
        _, stderr = process.communicate()
        assert "skipping" not in stderr, "a checkpoint was left unreadable"
        reached.append(max(load(p)["step"] for p in models.glob("checkpoint-*.pth")))
        process = start("-r", str(models))
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert len(set(reached)) >= 3, f"the kills did not land during training: {reached}"
    assert_same_run(load(models / "checkpoint-epoch2.pth"), uninterrupted)


FAILING_LOADER = """

class FailingDataset(torch.utils.data.Dataset):
    def __init__(self, corrupt: str) -> None:
        self.corrupt = Path(corrupt)

    def __len__(self) -> int:
        return 64

    def __getitem__(self, index: int):
        if index == 37 and self.corrupt.exists():
            raise ValueError(f"sample {index} is corrupt")
        return torch.full((1, 28, 28), index / 64), index % 10


class FailingLoader(BaseDataLoader):
    def __init__(self, corrupt: str, batch_size: int, num_workers: int = 0) -> None:
        super().__init__(FailingDataset(corrupt), batch_size, False, 0.0, num_workers)
"""


def code_copy(tmp_path: Path) -> Path:
    """The project's code (not its data, runs or environment) copied into `tmp_path/project`."""
    skipped = shutil.ignore_patterns(".*", "data", "saved", "*.egg-info", "__pycache__")
    return Path(shutil.copytree(ROOT, tmp_path / "project", ignore=skipped))


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.slow
def test_a_dataset_that_raises_mid_epoch_saves_and_names_batch_and_checkpoint(
    tmp_path: Path, workers: int
) -> None:
    """Sample 37, in batch 5 of 8, raises while a file says it is corrupt: the traceback is
    the user's to read, then our line; the saved state, resumed once the data is fixed, ends
    like an uninterrupted run."""
    project = code_copy(tmp_path)
    with open(project / "data_loader" / "data_loaders.py", "a") as file:
        file.write(FAILING_LOADER)
    corrupt = tmp_path / "corrupt"
    corrupt.touch()

    def train(save_dir: Path) -> subprocess.CompletedProcess:
        loader = {"type": "FailingLoader", "args": {"corrupt": str(corrupt), "batch_size": 8,
                                                     "num_workers": workers}}  # fmt: skip
        options = [f"trainer.save_dir={save_dir}", "trainer.epochs=2", "trainer.monitor=min loss",
                   "trainer.progress_bar=false", f"data_loader={json.dumps(loader)}"]  # fmt: skip
        return run_script("train.py", "-c", CONFIG, *[part for option in options
                          for part in ("-o", option)], cwd=project)  # fmt: skip

    failed = train(tmp_path / "saved")
    assert failed.returncode == 1, failed.stderr
    models = run_dir(tmp_path / "saved")
    checkpoint = models / "checkpoint-step4.pth"
    last = failed.stderr.strip().splitlines()[-1]
    assert "Traceback (most recent call last)" in failed.stderr and "__getitem__" in failed.stderr
    assert last == (
        "error: the data loader raised ValueError: sample 37 is corrupt at epoch 1, batch 5 "
        f"(its traceback is above); the last step's state is in {checkpoint}: fix the data, "
        f"then resume with python train.py -r {checkpoint}"
    )
    saved = load(checkpoint)
    assert (saved["epoch"], saved["step"], saved["batches_done"]) == (0, 4, 4)

    corrupt.unlink()
    resumed = run_script("train.py", "-r", str(checkpoint), cwd=project)
    assert resumed.returncode == 0, resumed.stderr
    whole = train(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    assert_same_run(load(models / "checkpoint-epoch2.pth"),
                    load(run_dir(tmp_path / "whole") / "checkpoint-epoch2.pth"))  # fmt: skip
