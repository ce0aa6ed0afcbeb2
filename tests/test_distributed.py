"""DistributedDataParallel through torchrun, on the CPU with the gloo backend (2 processes)."""

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import (
    NARROW,
    ROOT,
    TORCHRUN,
    assert_same_run,
    ended,
    epoch_lines,
    launched,
    load,
    run_dir,
    run_script,
    snapshot,
    wait_for,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_fault_tolerance import FAILING_LOADER, code_copy

from builder import build_trainer
from utils.config.check import apply_overrides, load_config_file, resolve_config

CONFIG = str(ROOT / "config" / "config.json")


def torchrun(n_processes: int, *args: str) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=N ARGS` on the CPU, one thread per process."""
    return ended([*TORCHRUN, "--standalone", f"--nproc_per_node={n_processes}", *args])


@pytest.fixture
def ddp_overrides(tmp_path: Path) -> list[str]:
    """Two short epochs over the whole split; 401 validation images, so that one rank's
    share is evened by a repeat, which its validation must not count."""
    return [
        "-d", "cpu",
        "-o", "data_loader.args.validation_split=401",
        "-o", f"trainer.save_dir={tmp_path / 'saved'}",
        "-o", "trainer.epochs=2",
        "-o", "trainer.save_period=1",
        "-o", "trainer.save_every_steps=8",
        "-o", "trainer.progress_bar=false",
        "-o", f"data_loader.args.data_dir={ROOT / 'data'}",
        "-o", "data_loader.args.batch_size=256",
        "-o", NARROW,
        "-o", f"metrics={json.dumps(['accuracy', F1])}",
    ]  # fmt: skip


F1 = {"type": "MulticlassF1Score", "args": {"num_classes": 10, "average": "macro"}, "name": "f1"}


def validation_values(weights: dict) -> dict[str, float]:
    """The validation loss and F1 of `weights` over the whole validation split, in one
    process."""
    options = [
        f"data_loader.args.data_dir={ROOT / 'data'}",
        NARROW,
        "data_loader.args.validation_split=401",
    ]  # as the runs have them
    config = apply_overrides(load_config_file(CONFIG), options)
    config["metrics"] = [F1]
    config = resolve_config(config)
    trainer = build_trainer(config, torch.device("cpu"))
    trainer.bare_model.load_state_dict(weights)
    return trainer.validate(trainer.valid_data_loader)


@pytest.mark.slow
def test_two_process_gloo_run_trains_writes_once_and_resumes(tmp_path, ddp_overrides) -> None:
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    result = torchrun(2, "tests/ddp_worker.py", str(dumps), "-c", CONFIG, *ddp_overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    epochs_logged = epoch_lines(result.stdout)

    # One set of outputs, written by rank 0 only.
    models = run_dir(tmp_path / "saved")
    log = tmp_path / "saved" / "log" / "Mnist_LeNet" / models.name
    assert len(list((tmp_path / "saved" / "models" / "Mnist_LeNet").iterdir())) == 1
    assert len(list(log.glob("events.out.tfevents.*"))) == 1
    assert "DDP world size 2" in (log / "info.log").read_text()
    assert {p.name for p in models.glob("*.pth")} == {
        "checkpoint-epoch1.pth", "checkpoint-epoch2.pth", "model_best.pth",
        "checkpoint-step8.pth", "checkpoint-step16.pth",  # each at its epoch's last step
    }  # fmt: skip

    # Both ranks end with the same weights, and they are the checkpoint's.
    rank0, rank1 = (torch.load(dumps / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    checkpoint = load(models / "checkpoint-epoch2.pth")
    for name, tensor in checkpoint["state_dict"].items():
        assert torch.equal(rank0[name], rank1[name]), name
        assert torch.equal(rank0[name], tensor), name
    # 4,000 - 401 validation images, 1,800 a rank in batches of 256: 8 steps per epoch.
    assert (checkpoint["epoch"], checkpoint["step"]) == (2, 16)

    # The logged validation loss is the mean over both ranks' halves, not rank 0's alone, and
    # the F1 is computed from both ranks' torchmetrics states together.
    best = load(models / "model_best.pth")
    one_process = validation_values(best["state_dict"])
    assert best["monitor_best"] == pytest.approx(one_process["loss"], rel=1e-5)
    logged = next(line for line in (log / "info.log").read_text().splitlines()
                  if f"  step {best['step']}  " in line)  # fmt: skip
    assert float(logged.split(" val_f1 ")[1].split()[0]) == pytest.approx(one_process["f1"],
                                                                        rel=1e-5)  # fmt: skip

    # Resume the 2-process run with 2 processes, from the step checkpoint at epoch 1's last
    # batch (rank 0 alone holds the F1's gathered state; no batch of the epoch is left, yet
    # every rank computes it together), and with 1.
    resume = ["-r", str(models / "checkpoint-step8.pth"), "-o", "trainer.epochs=3"]
    result = torchrun(2, "train.py", *ddp_overrides, *resume)  # later -o wins
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(load(models / "checkpoint-epoch2.pth"), checkpoint)
    assert (
        f"torchrun --standalone --nproc_per_node=2 train.py -d cpu -r {models} -o trainer.epochs=6"
        in result.stdout
    )  # the command to train longer starts it as it was started, on the device it was given
    resumed = epoch_lines(result.stdout)["1/3"]
    assert resumed.split("  ", 1)[1] == epochs_logged["1/2"].split("  ", 1)[1]  # its F1 too
    after = load(models / "checkpoint-epoch3.pth")
    assert (after["epoch"], after["step"]) == (3, 24)
    single = [*ddp_overrides, "-o", "trainer.epochs=4"]
    result = run_script("train.py", "-r", str(models / "checkpoint-epoch3.pth"), *single)
    assert result.returncode == 0, result.stderr[-3000:]
    # One process takes the whole 3,599-image split: 15 batches of 256.
    assert load(models / "checkpoint-epoch4.pth")["step"] == 24 + 15


def test_a_refusal_on_the_writing_rank_ends_every_rank_with_its_line(tmp_path, ddp_overrides):
    """A run id that exists is refused where rank 0 takes the run directory: every rank ends
    with that one line and code 2, nothing written (rank 1 once went on into training, and
    died with a traceback of a lost connection)."""
    first = [*ddp_overrides, "-o", "trainer.epochs=1", "-o", "trainer.len_epoch=1"]
    assert run_script("train.py", "-c", CONFIG, *first, "--run-id", "taken").returncode == 0
    saved = snapshot(tmp_path / "saved")
    result = torchrun(2, "train.py", "-c", CONFIG, *first, "--run-id", "taken")
    assert result.returncode != 0
    assert result.stderr.count("error: --run-id: 'taken' is a run that exists") == 2, result.stderr
    assert "Connection closed" not in result.stderr and "]: Traceback" not in result.stderr
    assert "failed (exitcode: 2)" in result.stderr and "exitcode: -6" not in result.stderr
    assert (
        "go on with that run: torchrun --standalone --nproc_per_node=2 train.py -r" in result.stderr
    )
    assert snapshot(tmp_path / "saved") == saved


@pytest.mark.slow
def test_sigterm_under_torchrun_stops_all_ranks_at_one_step_and_resumes_exactly(tmp_path) -> None:
    """torchrun passes SIGTERM to every rank; they agree on a step (a log step), rank 0 saves
    it, all exit; resuming from the run directory ends like an uninterrupted 2-process run."""

    def options(save_dir: Path) -> list[str]:
        settings = [
            f"trainer.save_dir={save_dir}", "trainer.epochs=2", "trainer.progress_bar=false",
            f"data_loader.args.data_dir={ROOT / 'data'}",
            "data_loader.args.batch_size=32", "trainer.save_every_steps=3", "trainer.log_step=5",
            NARROW,
        ]  # fmt: skip
        return ["-d", "cpu", *(item for setting in settings for item in ("-o", setting))]

    result = torchrun(2, "train.py", "-c", CONFIG, *options(tmp_path / "reference"))
    assert result.returncode == 0, result.stderr[-3000:]
    expected = load(run_dir(tmp_path / "reference") / "checkpoint-epoch2.pth")
    logged = epoch_lines(result.stdout)

    # From a step checkpoint between log steps, where each rank holds metric totals of its
    # own not yet summed: the checkpoint must hold both ranks' (the epoch's logged means).
    shutil.copytree(tmp_path / "reference", tmp_path / "from_step111")
    copy = run_dir(tmp_path / "from_step111")
    result = torchrun(2, "train.py", "-r", str(copy / "checkpoint-step111.pth"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert epoch_lines(result.stdout)["2/2"] == logged["2/2"]
    assert_same_run(load(copy / "checkpoint-epoch2.pth"), expected)

    # In one process, the same checkpoint goes on where the two ranks together stood: 54
    # batches of each are the first 108 of the epoch's 113 (3,600 images in batches of 32).
    shutil.copytree(tmp_path / "reference", tmp_path / "in_one")
    copy = run_dir(tmp_path / "in_one")
    result = run_script("train.py", "-r", str(copy / "checkpoint-step111.pth"), "-d", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the checkpoint was saved by 2 processes, each 54 batches into this pass over the " \
        "data; with 1, it goes on after 108\n" in result.stdout  # fmt: skip
    assert "resuming in epoch 2 of 2, after 108 of its 113 batches (step 111)" in result.stdout
    assert load(copy / "checkpoint-epoch2.pth")["step"] == 111 + 113 - 108

    save_dir = tmp_path / "saved"
    run = [*TORCHRUN, "--standalone", "--nproc_per_node=2", "train.py", "-c", CONFIG,
           *options(save_dir)]  # fmt: skip
    with open(tmp_path / "stdout.txt", "w") as out, launched(run, stdout=out) as launcher:
        wait_for("models/*/*/checkpoint-step3.pth", save_dir, launcher)
        launcher.send_signal(signal.SIGTERM)
        _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    assert stderr.count("stopped by SIGTERM") == 2, stderr[-3000:]  # both ranks, cleanly
    stdout = (tmp_path / "stdout.txt").read_text()
    assert stdout.count("SIGTERM received: stopping") == 1, stdout[-3000:]  # said once
    models = run_dir(save_dir)
    stopped_at = max(load(p)["step"] for p in models.glob("checkpoint-*.pth"))
    assert stopped_at % 5 == 0 and stopped_at < expected["step"]

    result = torchrun(2, "train.py", "-r", str(models))
    assert result.returncode == 0, result.stderr[-3000:]
    final = load(models / "checkpoint-epoch2.pth")
    assert final["step"] == expected["step"]
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][name], tensor), name


@pytest.mark.slow
def test_a_data_error_on_one_rank_ends_the_run_without_a_hang(tmp_path: Path) -> None:
    """Sample 37 is rank 1's (the ranks take turns through the unshuffled order): only rank 1's
    loader raises, while rank 0 is in its next step. A save needs every rank, so rank 1 saves
    nothing and ends (it waited on a collective before: a hang until the gloo timeout)."""
    project = code_copy(tmp_path)
    with open(project / "data_loader" / "data_loaders.py", "a") as file:
        file.write(FAILING_LOADER)
    (tmp_path / "corrupt").touch()
    loader = {"type": "FailingLoader", "args": {"corrupt": str(tmp_path / "corrupt"),
                                                "batch_size": 8}}  # fmt: skip
    options = [f"trainer.save_dir={tmp_path / 'saved'}", "trainer.epochs=1",
               "trainer.progress_bar=false", "trainer.monitor=min loss",
               f"data_loader={json.dumps(loader)}"]  # fmt: skip
    result = torchrun(2, str(project / "train.py"), "-c", CONFIG, "-d", "cpu",
                      *[part for option in options for part in ("-o", option)])  # fmt: skip
    assert result.returncode != 0
    assert (
        "error: the data loader raised ValueError: sample 37 is corrupt at epoch 1, batch 3, "
        "on rank 1 (its traceback is above); the other ranks were mid-step, so nothing was "
        "saved: fix the data, then resume from the run's newest checkpoint (-r RUN_DIR)"
    ) in result.stderr, result.stderr[-3000:]
    assert not list((tmp_path / "saved").rglob("checkpoint-step*.pth"))


@pytest.mark.slow
def test_a_save_between_log_steps_leaves_the_logged_window_whole(tmp_path: Path) -> None:
    """Under torchrun a save sums the ranks' pending totals for the checkpoint, and used to
    publish them too: the next logged window then covered only the steps after the save.
    With step checkpoints every 3 steps, `train/loss` at every 5th step is what a run that
    saves no step checkpoint logs, and so is the epoch's loss."""

    def run(save_dir: Path, *extra: str) -> dict[tuple[str, int], float | str]:
        settings = [f"trainer.save_dir={save_dir}", "trainer.epochs=1", "trainer.len_epoch=10",
                    "trainer.log_step=5", "trainer.progress_bar=false", NARROW,
                    f"data_loader.args.data_dir={ROOT / 'data'}", "data_loader.args.batch_size=32",
                    *extra]  # fmt: skip
        result = torchrun(2, "train.py", "-c", CONFIG, "-d", "cpu",
                          *[part for setting in settings for part in ("-o", setting)])  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        (log,) = (save_dir / "log").glob("*/*")
        events = EventAccumulator(str(log), size_guidance={"scalars": 0}).Reload()
        logged = {(tag, e.step): e.value for tag in ("train/loss", "epoch/loss")
                  for e in events.Scalars(tag)}  # fmt: skip
        return {**logged, ("epoch line", 1): epoch_lines(result.stdout)["1/1"]}

    saving = run(tmp_path / "saving", "trainer.save_every_steps=3")
    assert set(saving) == {("train/loss", 5), ("train/loss", 10), ("epoch/loss", 10),
                           ("epoch line", 1)}  # fmt: skip
    assert saving == run(tmp_path / "plain")
