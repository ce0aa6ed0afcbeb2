"""The run directory under attack: checkpoints moved out of it, resumed from an earlier point,
two processes at once, a run with no checkpoint yet, run ids that lead elsewhere."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import (
    ROOT,
    TrainedRun,
    assert_same_state,
    computed_once,
    load,
    make_trainer,
    run_dir,
    run_script,
    shrunk,
    toy_config,
)
from test_cli_errors import assert_refused, run_in_process

import base.trainer_state
import train
from base.monitor import Monitor
from trainer.hooks import Checkpointer
from utils.checkpoint.files import numbered_checkpoints
from utils.errors import TrainingFailed
from utils.run.dirs import RunDirs, run_dirs_at

CONFIG = str(ROOT / "config" / "config.json")
FOUR_EPOCHS = ["-o", "trainer.epochs=4", "-o", "trainer.save_every_steps=2"]


@pytest.fixture(scope="module")
def four_epochs(tmp_path_factory) -> TrainedRun:
    """A 4-epoch run (3 steps each) with every epoch's checkpoint and step checkpoints."""

    def train_it(directory: Path) -> None:
        result = run_script("train.py", "-c", CONFIG, *shrunk(directory / "saved"), *FOUR_EPOCHS)
        assert result.returncode == 0, result.stderr

    directory = computed_once(tmp_path_factory, "four_epochs", train_it)
    return TrainedRun(directory / "saved", "", "")


def files_under(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*")
            if p.is_file() and p.name != "train.lock"}  # fmt: skip


def test_a_checkpoint_outside_its_run_continues_in_a_new_run_directory(shrunk_run, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(shrunk_run.models / "checkpoint-epoch1.pth", elsewhere / "ck.pth")
    (elsewhere / "config.json").write_text('{"not": "this run\'s"}')
    before = files_under(elsewhere)
    save_dir = tmp_path / "saved"
    result = run_script("train.py", "-r", str(elsewhere / "ck.pth"),
                        "-o", f"trainer.save_dir={save_dir}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert files_under(elsewhere) == before  # nothing written beside the checkpoint
    assert "continues in a new one" in result.stdout
    continued = load(
        next((save_dir / "models" / "Mnist_LeNet").iterdir()) / "checkpoint-epoch2.pth"
    )
    assert_same_state(
        continued["state_dict"], load(shrunk_run.models / "checkpoint-epoch2.pth")["state_dict"]
    )


@pytest.mark.parametrize(
    "path", ["/ck.pth", "/a/ck.pth", "/a/models/ck.pth", "/a/b/Other/r/ck.pth"]
)
def test_only_a_models_name_run_directory_is_a_run_directory(path):
    assert run_dirs_at(Path(path).parent, "Exp") is None
    found = run_dirs_at("/s/models/Exp/r1", "Exp")
    assert found == RunDirs(Path("/s/models/Exp/r1"), Path("/s/log/Exp/r1"))


@pytest.mark.slow
def test_resuming_an_earlier_checkpoint_sets_the_later_ones_aside(four_epochs, tmp_path):
    run = four_epochs.copy_to(tmp_path)
    models = run.models
    later = {"checkpoint-epoch2.pth", "checkpoint-epoch3.pth", "checkpoint-epoch4.pth",
             "checkpoint-step10.pth", "checkpoint-step12.pth", "model_best.pth"}  # fmt: skip
    assert later <= {p.name for p in models.iterdir()}
    (models / "checkpoint-epoch4.test_metrics.json").write_text("{}")
    result = run_script("train.py", "-r", str(models / "checkpoint-epoch1.pth"),
                        "-o", "trainer.epochs=2")  # fmt: skip
    assert result.returncode == 0, result.stderr
    (aside,) = models.glob("abandoned_*")
    assert {p.name for p in aside.iterdir()} == later | {"checkpoint-epoch4.test_metrics.json"}
    assert f"to {aside.relative_to(ROOT) if aside.is_relative_to(ROOT) else aside}" in result.stdout
    # The top level is one timeline: the new step checkpoints were kept, not pruned in favour
    # of the higher-numbered ones of the abandoned future.
    top = {p.name for p in models.glob("checkpoint-*.pth")}
    assert top == {"checkpoint-epoch1.pth", "checkpoint-epoch2.pth", "checkpoint-step4.pth",
                   "checkpoint-step6.pth"}  # fmt: skip
    assert load(models / "checkpoint-step6.pth")["step"] == 6
    best, newest = load(models / "model_best.pth"), load(models / "checkpoint-epoch2.pth")
    assert best["monitor_best"] == newest["monitor_best"]


def test_the_best_model_is_written_before_the_epoch_checkpoint(
    shrunk_overrides, monkeypatch, capsys
):
    """The disk fills while model_best.pth of epoch 2 is written: the newest checkpoint must not
    record a best that model_best.pth lacks (its resumed run would never write it)."""
    real_save = base.trainer_state.save_checkpoint

    def full_at_best_of_epoch_two(state: dict, path: Path) -> None:
        if state["epoch"] == 2 and path.name == "model_best.pth":
            raise TrainingFailed(f"cannot write {path} (No space left on device)")
        real_save(state, path)

    monkeypatch.setattr(base.trainer_state, "save_checkpoint", full_at_best_of_epoch_two)
    code, stderr = run_in_process(train.main, ["-c", CONFIG, *shrunk_overrides], capsys)
    assert code == 1 and "model_best.pth (No space left on device)" in stderr
    models = run_dir(Path(shrunk_overrides[1].removeprefix("trainer.save_dir=")))
    newest = max(numbered_checkpoints(models), key=lambda p: load(p)["step"])
    assert load(newest)["monitor_best"] == load(models / "model_best.pth")["monitor_best"]


def monitoring_trainer(models: Path):
    """A small trainer that monitors its loss and writes into `models`."""
    model = torch.nn.Linear(2, 2)
    trainer = make_trainer(model, torch.nn.functional.cross_entropy,
                           torch.optim.SGD(model.parameters(), lr=0.1),
                           toy_config(monitor="min loss", epochs=3),
                           [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))])  # fmt: skip
    trainer.run_dirs = RunDirs(models, models)
    return trainer


def test_a_resumed_run_rewrites_a_best_model_that_lags_its_record(tmp_path):
    """model_best.pth of a run from before that order (or copied over) holds an older best:
    the resumed run forgets the recorded best, so the next validated epoch writes it."""
    trainer = monitoring_trainer(tmp_path)
    trainer.monitor.best, trainer.step = 0.7, 5
    trainer.save("model_best.pth")
    checkpointer = next(h for h in trainer.hooks if isinstance(h, Checkpointer))
    checkpointer.before_train(trainer)
    assert trainer.monitor.best == 0.7  # model_best.pth holds the recorded best: kept
    trainer.monitor.best = 0.5  # recorded in the newest checkpoint, not in model_best.pth
    checkpointer.before_train(trainer)
    assert trainer.monitor.best == Monitor("min loss", ["loss"]).best  # forgotten


def test_a_resumed_run_restores_its_best_model_from_the_epoch_that_set_it(tmp_path):
    """Resumed from an earlier point, whose future's model_best.pth was set aside: the epoch
    checkpoint that set the recorded best is that best model, so it takes its place."""
    trainer = monitoring_trainer(tmp_path)
    trainer.monitor.best, trainer.step, trainer.epoch = 0.5, 2, 2
    trainer.save("checkpoint-epoch2.pth")  # the epoch that set the best: count 0
    trainer.monitor.not_improved_count, trainer.step, trainer.epoch = 1, 4, 4
    trainer.save("checkpoint-epoch4.pth")  # resumed from here: the best is still 0.5
    checkpointer = next(h for h in trainer.hooks if isinstance(h, Checkpointer))
    checkpointer.before_train(trainer)
    assert trainer.monitor.best == 0.5  # kept
    best = (tmp_path / "model_best.pth").read_bytes()
    assert best == (tmp_path / "checkpoint-epoch2.pth").read_bytes()


def hold_lock(models: Path) -> subprocess.Popen:
    """Another process that has taken the run directory, once it says so."""
    code = ("import sys; from pathlib import Path; from utils.run.lock import lock_run_dir; "
            f"lock_run_dir(Path({str(models)!r})); print('locked', flush=True); "
            "sys.stdin.read()")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert holder.stdout.readline() == "locked\n"
    return holder


def test_a_run_directory_in_use_is_refused_and_a_dead_holder_s_lock_is_taken_over(
    shrunk_run, tmp_path, capsys
):
    models = shrunk_run.copy_to(tmp_path).models
    holder = hold_lock(models)
    before = files_under(models.parent.parent.parent)
    try:
        assert_refused(train.main, ["-r", str(models), "-o", "trainer.epochs=3"], capsys,
                       f"is in use by pid {holder.pid} on host", "train.lock")  # fmt: skip
        assert files_under(models.parent.parent.parent) == before  # nothing written
    finally:
        holder.kill()  # like kill -9: the lock file stays, naming a dead process
        holder.wait()
    result = run_script("train.py", "-r", str(models), "-o", "trainer.epochs=3")
    assert result.returncode == 0, result.stderr
    assert load(models / "checkpoint-epoch3.pth")["epoch"] == 3


def test_a_run_stopped_before_its_first_checkpoint_starts_again_from_its_config(
    shrunk_run, tmp_path
):
    run = shrunk_run.copy_to(tmp_path)
    finished = load(run.models / "checkpoint-epoch2.pth")
    for path in [*run.models.glob("*.pth")]:
        path.unlink()  # as if killed before the first checkpoint: config.json is all there is
    result = run_script("train.py", "-r", str(run.models))
    assert result.returncode == 0, result.stderr
    assert "has no checkpoint yet: starting the run again from the beginning" in result.stdout
    assert run_dir(run.save_dir) == run.models  # in the same directory, no new one
    assert_same_state(load(run.models / "checkpoint-epoch2.pth")["state_dict"],
                      finished["state_dict"])  # fmt: skip


def test_a_directory_that_is_not_a_run_is_not_started(tmp_path, capsys):
    shutil.copy(CONFIG, tmp_path / "config.json")  # like config/: a config.json, no run
    before = files_under(tmp_path)
    assert_refused(train.main, ["-r", str(tmp_path)], capsys, f"-r {tmp_path}", "no readable")
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("run_id", ["../../escape", "/abs/path", "..", ".", "a\0b", "x" * 256])
def test_run_ids_are_single_directory_names(run_id, shrunk_overrides, tmp_path, capsys):
    assert_refused(train.main, ["-c", CONFIG, *shrunk_overrides, "--run-id", run_id], capsys,
                   "--run-id", "expected a directory name")  # fmt: skip
    assert not any(tmp_path.rglob("*escape*")) and not (tmp_path / "saved").exists()


def test_run_id_is_refused_where_a_run_continues_in_its_own_directory(shrunk_run, tmp_path, capsys):
    models = shrunk_run.copy_to(tmp_path).models
    before = files_under(models)
    assert_refused(train.main, ["-r", str(models), "-o", "trainer.epochs=3", "--run-id", "new"],
                   capsys, "--run-id", "names new runs only")  # fmt: skip
    assert files_under(models) == before


@pytest.mark.parametrize("flag", ["-r", "-c"])
def test_an_empty_path_is_refused(flag, capsys):
    assert_refused(train.main, [flag, ""], capsys, f"{flag}: empty path")


def test_files_that_only_look_like_checkpoints_are_never_pruned(shrunk_run, tmp_path):
    models = shrunk_run.copy_to(tmp_path).models
    strays = ["checkpoint-step1-backup.pth", "checkpoint-epoch_old.pth", "checkpoint-step.pth"]
    for name in strays:
        (models / name).write_bytes(b"the user's own")
    (models / "checkpoint-step0.pth").mkdir()  # a directory named like a checkpoint
    result = run_script("train.py", "-r", str(models / "checkpoint-epoch2.pth"),
                        "-o", "trainer.epochs=4", "-o", "trainer.save_every_steps=1",
                        "-o", "trainer.keep_last=1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in strays:
        assert (models / name).read_bytes() == b"the user's own"
    assert (models / "checkpoint-step0.pth").is_dir()
    assert sorted(p.name for p in numbered_checkpoints(models)) == [
        "checkpoint-epoch4.pth", "checkpoint-step11.pth", "checkpoint-step12.pth"
    ]  # fmt: skip


def test_the_requeue_recipe_takes_up_a_start_killed_before_its_config(tmp_path, capsys):
    """The README's recipe starts `-c CONFIG --run-id ID` while ID has no config.json: a start
    killed that early left only its lock and a temporary file, and the run must go on in ID
    (not ID_1, where the next requeue would not look). Once ID is a run, a second start of
    the same command is refused."""
    save_dir = tmp_path / "saved"
    models = save_dir / "models" / "Mnist_LeNet" / "job7"
    models.mkdir(parents=True)
    (save_dir / "log" / "Mnist_LeNet" / "job7").mkdir(parents=True)
    (models / "train.lock").write_text('{"pid": 1, "host": "gone", "started": "then"}\n')
    (models / ".config.json.0123456789ab.tmp").write_text("{")
    command = ["-c", CONFIG, *shrunk(save_dir), "--run-id", "job7"]
    result = run_script("train.py", *command)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in models.parent.iterdir()] == ["job7"]
    assert load(models / "checkpoint-epoch2.pth")["epoch"] == 2
    assert_refused(train.main, command, capsys, "--run-id: 'job7' is a run that exists",
                   f"-r {models}")  # fmt: skip


def test_a_run_whose_checkpoints_are_all_damaged_says_what_to_do(shrunk_run, tmp_path, capsys):
    models = shrunk_run.copy_to(tmp_path).models
    for path in numbered_checkpoints(models):
        path.write_bytes(path.read_bytes()[:1000])  # cut short, as by a full disk long ago
    before = files_under(models)
    code, stderr = run_in_process(train.main, ["-r", str(models)], capsys)
    *warnings, error = stderr.strip().splitlines()
    assert code == 2 and len(warnings) == 2 and all("warning: skipping" in w for w in warnings)
    assert "none of its checkpoints is readable" in error and "move them aside" in error
    assert files_under(models) == before


def test_a_resume_refused_for_an_unwritable_config_leaves_nothing_behind(shrunk_run, tmp_path,
                                                                         capsys):  # fmt: skip
    """`config.json` is a directory (and the log directory is gone, as in a moved run): the
    refusal comes before the lock file or a log directory is made."""
    run = shrunk_run.copy_to(tmp_path)
    (run.models / "config.json").unlink()
    (run.models / "train.lock").unlink()
    (run.models / "config.json").mkdir()
    shutil.rmtree(run.save_dir / "log")
    before = sorted(run.save_dir.rglob("*"))
    assert_refused(train.main, ["-r", str(run.models), "-o", "trainer.epochs=3"], capsys,
                   f"{run.models / 'config.json'} (Is a directory)")  # fmt: skip
    assert sorted(run.save_dir.rglob("*")) == before
