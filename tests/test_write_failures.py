"""Outputs that cannot be written (a full disk, a read-only run, a directory in the way):
one line, the right exit code, and every file that was there before left as it was."""

import errno
import os
import resource
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TrainedRun, run_script
from test_cli_errors import assert_refused, run_in_process, test_script

import train
import utils.checkpoint.files
from utils.checkpoint.files import load_checkpoint, save_checkpoint
from utils.errors import TrainingFailed
from utils.stop_signals import Stopped

# Resuming the shared run for a third epoch, with a checkpoint after each step: the first
# new write is a 7 MB checkpoint, the run's own files before it are small.
ONE_MORE_EPOCH = ["-o", "trainer.epochs=3", "-o", "trainer.save_every_steps=1"]


def outputs(directory: Path, suffixes: tuple[str, ...] = (".pth", ".json")) -> dict[str, bytes]:
    """The checkpoints and JSON files under `directory`, by relative path: what a failed
    write must leave exactly as it was."""
    files = [p for p in directory.rglob("*") if p.suffix in suffixes and p.is_file()]
    return {str(path.relative_to(directory)): path.read_bytes() for path in files}


def temporary_files(directory: Path) -> list[Path]:
    return [path for path in directory.rglob("*") if path.name.endswith(".tmp")]


def assert_one_line(result: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    assert result.returncode == code, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def run_in_mount_namespace(mounts: str, script: str, *args: str, after: str = ""):
    """Run an entry script in a private mount namespace (`unshare`; also without root where
    the kernel allows user namespaces) after the shell commands `mounts`, then `after` (the
    mounts vanish with the namespace). Skips the test where no such namespace can be made."""
    command = f'{mounts} || exit 99\n"$0" "$@"; code=$?\n{after}\nexit $code'
    argv = ["unshare", "--map-root-user", "--mount", "sh", "-c", command,
            sys.executable, script, *args]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    try:
        result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=300)  # fmt: skip
    except FileNotFoundError:
        pytest.skip("no unshare command")
    if result.returncode == 99 or "unshare: " in result.stderr:
        pytest.skip(f"cannot mount in a private namespace here: {result.stderr.strip()}")
    return result


def run_read_only(directory: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    """Run an entry script with `directory` read-only to it: a read-only bind mount, or for a
    user other than root (whom permissions do not stop) simply its write bits removed."""
    if os.geteuid() != 0:
        mode = directory.stat().st_mode
        directory.chmod(mode & ~0o222)
        try:
            return run_script(script, *args)
        finally:
            directory.chmod(mode)
    where = shlex.quote(str(directory))
    mounts = f"mount --bind {where} {where} && mount -o remount,bind,ro {where}"
    return run_in_mount_namespace(mounts, script, *args)


# ---------------------------------------------------------------- a full disk mid-run


def assert_stopped_with_earlier_checkpoints_intact(
    result: subprocess.CompletedProcess, run: Path, before: dict[str, bytes], reason: str
) -> None:
    """Exit 1 with torch's failure turned into one line; the checkpoints the run had are
    intact (its config.json is rewritten on resume, as always)."""
    assert_one_line(result, 1, "cannot write", reason, "previous checkpoints are intact")
    assert outputs(run, (".pth",)) == before
    for path in run.rglob("*.pth"):
        load_checkpoint(path)
    assert not temporary_files(run)


def test_a_file_size_limit_mid_run_stops_with_one_line_and_keeps_the_checkpoints(
    shrunk_run: TrainedRun, tmp_path: Path
) -> None:
    """The write of a checkpoint fails half-way (the file size limit, `ulimit -f`): torch.save
    reports that as `RuntimeError: [enforce fail at inline_container.cc] unexpected pos`,
    which must end the run like any full disk, without its traceback."""
    run = shrunk_run.copy_to(tmp_path)
    before = outputs(run.save_dir, (".pth",))

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, not kills
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # 1 MiB per file

    result = subprocess.run(
        [sys.executable, "train.py", "-r", str(run.models), *ONE_MORE_EPOCH], cwd=ROOT,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, preexec_fn=limit_file_size,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert_stopped_with_earlier_checkpoints_intact(result, run.save_dir, before, "File too large")


@pytest.mark.slow
def test_a_full_file_system_mid_run_stops_with_one_line_and_keeps_the_checkpoints(
    shrunk_run: TrainedRun, tmp_path: Path
) -> None:
    """A real full disk: the run resumed on a tmpfs with 4 MiB free, less than a checkpoint."""
    mount_point, after = tmp_path / "disk", tmp_path / "after"
    mount_point.mkdir()
    after.mkdir()
    size_kib = sum(p.stat().st_size for p in shrunk_run.save_dir.rglob("*")) // 1024 + 4096
    before = outputs(shrunk_run.save_dir, (".pth",))
    disk, source = shlex.quote(str(mount_point)), shlex.quote(str(shrunk_run.save_dir))
    models = mount_point / shrunk_run.models.relative_to(shrunk_run.save_dir)
    result = run_in_mount_namespace(
        f"mount -t tmpfs -o size={size_kib}k tmpfs {disk} && cp -a {source}/. {disk}/",
        "train.py", "-r", str(models), *ONE_MORE_EPOCH,
        after=f"cp -a {disk}/. {shlex.quote(str(after))}/",
    )  # fmt: skip
    assert_stopped_with_earlier_checkpoints_intact(result, after, before, "No space left on device")


class FailingFile:
    """The file torch.save writes into, failing with `failure` once `limit` bytes are in."""

    def __init__(self, file, limit: int, failure: BaseException) -> None:
        self.file, self.limit, self.failure, self.written = file, limit, failure, 0

    def write(self, data) -> int:
        if self.written + len(data) > self.limit:
            raise self.failure
        self.written += len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def save_failing(monkeypatch, path: Path, failure: BaseException) -> None:
    """`save_checkpoint` of a 4 MB state, with its file write failing half-way."""
    real_save = torch.save
    monkeypatch.setattr(utils.checkpoint.files.torch, "save", lambda state, file: real_save(
        state, FailingFile(file, 2_000_000, failure)))  # fmt: skip
    save_checkpoint({"weights": torch.zeros(1_000_000)}, path)


@pytest.mark.parametrize(
    "failure", [OSError(errno.ENOSPC, "No space left on device"), OSError(errno.EIO, "I/O error")]
)
def test_a_write_failing_inside_torch_save_is_a_training_failure(
    tmp_path: Path, monkeypatch, failure: OSError
) -> None:
    path = tmp_path / "checkpoint-epoch1.pth"
    save_checkpoint({"weights": torch.ones(3)}, path)
    with pytest.raises(TrainingFailed, match=failure.strerror):
        save_failing(monkeypatch, path, failure)
    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), Stopped(signal.SIGTERM)])
def test_a_stop_inside_torch_save_stays_a_stop(tmp_path: Path, monkeypatch, stop) -> None:
    """Ctrl-C, or a second stop signal, while a checkpoint is written: torch would report a
    RuntimeError (a traceback, exit 1) instead of the stop (one line, 130/143)."""
    with pytest.raises(type(stop)):
        save_failing(monkeypatch, tmp_path / "c.pth", stop)
    assert list(tmp_path.iterdir()) == []


def test_other_errors_of_torch_save_are_not_taken_for_a_full_disk(tmp_path: Path) -> None:
    """Only a failed write is a TrainingFailed: torch's own RuntimeErrors, even raised while
    another error was being handled, go through unchanged."""

    class Unsaveable:
        def __reduce_ex__(self, protocol):
            try:
                raise ValueError("inner")
            except ValueError:
                raise RuntimeError("cannot pickle this") from None

    with pytest.raises(RuntimeError, match="cannot pickle this"):
        save_checkpoint({"thing": Unsaveable()}, tmp_path / "c.pth")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- read-only, or in the way


def test_test_py_on_a_read_only_run_is_refused_before_evaluating(
    shrunk_run: TrainedRun, tmp_path: Path
) -> None:
    run = shrunk_run.copy_to(tmp_path)
    before = outputs(run.save_dir)
    result = run_read_only(run.models, "test.py", "-r", str(run.models))
    assert_one_line(result, 2, str(run.models / "model_best.test_metrics.json"), "nothing")
    assert "evaluating" not in result.stdout  # refused before the evaluation, not after it
    assert outputs(run.save_dir) == before


def test_resuming_a_read_only_run_is_refused(shrunk_run: TrainedRun, tmp_path: Path) -> None:
    run = shrunk_run.copy_to(tmp_path)
    before = outputs(run.save_dir)
    result = run_read_only(run.models, "train.py", "-r", str(run.models), *ONE_MORE_EPOCH)
    assert_one_line(result, 2, str(run.models))
    assert outputs(run.save_dir) == before
    assert not temporary_files(run.save_dir)


def test_a_directory_named_config_json_is_refused_on_resume(
    shrunk_run: TrainedRun, tmp_path: Path, capsys
) -> None:
    run = shrunk_run.copy_to(tmp_path)
    (run.models / "config.json").unlink()
    (run.models / "config.json").mkdir()
    before = outputs(run.save_dir)
    argv = ["-r", str(run.models), *ONE_MORE_EPOCH]
    assert_refused(train.main, argv, capsys, f"{run.models / 'config.json'} (Is a directory)")
    assert (run.models / "config.json").is_dir()
    assert outputs(run.save_dir) == before
    assert not temporary_files(run.save_dir)


def with_a_directory_for_the_metrics(shrunk_run: TrainedRun, tmp_path: Path):
    """A copy of the run with a directory where test.py writes checkpoint-epoch1's metrics."""
    run = shrunk_run.copy_to(tmp_path)
    metrics = run.models / "checkpoint-epoch1.test_metrics.json"
    metrics.mkdir()
    return run, metrics


def test_a_directory_in_place_of_the_metrics_is_refused_before_evaluating(
    shrunk_run: TrainedRun, tmp_path: Path, capsys, monkeypatch
) -> None:
    run, metrics = with_a_directory_for_the_metrics(shrunk_run, tmp_path)

    def evaluation_started(*args, **kwargs):
        raise AssertionError("the evaluation started before the output was checked")

    monkeypatch.setattr(test_script, "build_data_loader", evaluation_started)
    argv = ["-r", str(run.models / "checkpoint-epoch1.pth")]
    assert_refused(test_script.main, argv, capsys, f"{metrics} (Is a directory)")
    assert metrics.is_dir() and not list(metrics.iterdir())


def test_a_metrics_write_failing_after_the_evaluation_is_one_line(
    shrunk_run: TrainedRun, tmp_path: Path, capsys, monkeypatch
) -> None:
    """Whatever the early check cannot foresee (here: it is skipped) still ends in one line."""
    run, metrics = with_a_directory_for_the_metrics(shrunk_run, tmp_path)
    monkeypatch.setattr(test_script, "check_writable", lambda path: None)
    code, stderr = run_in_process(
        test_script.main, ["-r", str(run.models / "checkpoint-epoch1.pth")], capsys
    )
    assert code == 2, stderr
    assert stderr.splitlines() == [stderr.strip()] and f"{metrics} (Is a directory)" in stderr
    assert not temporary_files(run.models)
