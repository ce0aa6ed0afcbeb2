"""Ctrl-C and SIGTERM outside the training loop (while torch is imported, the run is built,
test.py evaluates): one line on stderr and exit code 130 / 143, never a traceback or a
silent kill, and nothing half-written."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TrainedRun, run_dir, shrunk, wait_until

from utils.checkpoint.files import load_checkpoint
from utils.stop_signals import StopSignals, exit_on_stop_signals

CONFIG = str(ROOT / "config" / "config.json")
OUTSIDE_TRAINING = "outside the training loop (this stop saves no checkpoint)"  # train.py's
BEFORE_METRICS = "before the test metrics were written"  # test.py's
SCRIPTS = [pytest.param("train.py", OUTSIDE_TRAINING, id="train"),
           pytest.param("test.py", BEFORE_METRICS, id="test")]  # fmt: skip


def start(script: str, *args: str) -> subprocess.Popen:
    """An entry script in the background, on the CPU, its output captured."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    pipe = subprocess.PIPE
    return subprocess.Popen([sys.executable, script, *args], cwd=ROOT, env=env,
                            stdout=pipe, stderr=pipe, text=True)  # fmt: skip


def catches_sigterm(pid: int) -> bool:
    """Whether process `pid` has a handler for SIGTERM (Linux's SigCgt mask). Python installs
    none of its own, so this tells that an entry script's first lines have run: it has
    installed its handler and is importing torch, which takes over a second."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def read_until(process: subprocess.Popen, prefix: str) -> None:
    """Read the process's stdout up to a line starting with `prefix` (the event to wait for)."""
    while not (line := process.stdout.readline()).startswith(prefix):
        assert line, f"ended before a line starting {prefix!r}: {process.communicate()}"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
@pytest.mark.parametrize(("script", "when"), SCRIPTS)
def test_a_stop_signal_while_torch_is_imported_is_one_line(
    tmp_path: Path, script: str, when: str, signum: int
) -> None:
    """Sent once the script's handler is in place, which is its first statement. A signal
    sent blind, at once after the start, could arrive while the interpreter itself starts,
    before any line of the script ran: nothing can catch it there (SIGTERM kills, SIGINT is
    a traceback from site.py), so the test waits for the handler instead."""
    save_dir = tmp_path / "saved"
    options = ["-c", CONFIG, *shrunk(save_dir)] if script == "train.py" else ["-r", "none.pth"]
    process = start(script, *options)
    wait_until(lambda: catches_sigterm(process.pid), process, "a SIGTERM handler")
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    assert stderr == f"stopped by {signal.Signals(signum).name} {when}\n"
    assert stdout == ""
    assert not save_dir.exists()  # stopped before anything was built


# Modules whose import (one line of `python -X importtime` each, as it completes) marks a
# moment in the middle of numpy's and torch's imports, where a stop once raised an
# exception inside a C extension's import: swallowed (the run trained on), or an abort.
IMPORT_MOMENTS = ["numpy._core.multiarray", "numpy", "torch._C", "torch._tensor", "torch.nn"]


@pytest.mark.slow
@pytest.mark.parametrize("module", IMPORT_MOMENTS)
@pytest.mark.parametrize(("script", "when"), SCRIPTS)
def test_a_stop_in_the_middle_of_the_imports_ends_the_process(
    tmp_path: Path, script: str, when: str, module: str
) -> None:
    save_dir = tmp_path / "saved"
    options = ["-c", CONFIG, *shrunk(save_dir)] if script == "train.py" else ["-r", "none.pth"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    process = subprocess.Popen([sys.executable, "-X", "importtime", script, *options], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    while (line := process.stderr.readline()).rsplit("|", 1)[-1].strip() != module:
        assert line, f"{module} was never imported: {process.communicate()}"
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    lines = [line for line in stderr.splitlines() if not line.startswith("import time:")]
    assert (process.returncode, lines) == (143, [f"stopped by SIGTERM {when}"]), stderr[-2000:]
    assert stdout == "" and not save_dir.exists()


def test_sigterm_as_the_run_starts_is_one_line_on_either_side_of_the_hand_over(
    tmp_path: Path,
) -> None:
    """SIGTERM as soon as train.py prints its first line (the run is built; training is
    about to start). Whether the startup handler still has the signal (stop at once) or the
    trainer's has taken over (finish the step, save, stop) is a race the test cannot
    steer; either way: exit 143, one line, and every file there loads."""
    process = start("train.py", "-c", CONFIG, *shrunk(tmp_path / "saved"))
    read_until(process, "run ")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert stderr in (f"stopped by SIGTERM {OUTSIDE_TRAINING}\n", "stopped by SIGTERM\n")
    models = run_dir(tmp_path / "saved")
    assert not [path for path in models.iterdir() if path.name.endswith(".tmp")]
    checkpoints = list(models.glob("checkpoint-*.pth"))
    assert checkpoints or OUTSIDE_TRAINING in stderr  # the trainer stops only after a save
    for path in checkpoints:
        load_checkpoint(path)


def test_sigterm_during_an_evaluation_is_one_line_and_writes_no_metrics(
    shrunk_run: TrainedRun, tmp_path: Path
) -> None:
    run = shrunk_run.copy_to(tmp_path)
    # Batches of one: the evaluation takes seconds, not a fifth of one, so the signal (sent
    # within a millisecond of the line) arrives before it ends even on a busy machine.
    process = start("test.py", "-r", str(run.models), "-o", "data_loader.args.batch_size=1")
    read_until(process, "evaluating ")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert stderr == f"stopped by SIGTERM {BEFORE_METRICS}\n"
    assert not [path.name for path in run.models.iterdir() if path.suffix in (".json", ".tmp")
                and path.name != "config.json"]  # fmt: skip


@pytest.fixture
def restore_stop_handlers():
    """Whatever a test installs for SIGINT and SIGTERM is undone after it."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_the_trainer_takes_the_signals_over_and_hands_them_back(
    restore_stop_handlers, capsys
) -> None:
    exit_on_stop_signals("while testing")
    with StopSignals():
        pass  # a run that ends without a signal
    with pytest.raises(SystemExit) as stop:
        signal.raise_signal(signal.SIGINT)  # the startup handler again
    assert stop.value.code == 130
    assert capsys.readouterr().err == "stopped by SIGINT while testing\n"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # a second signal kills at once


def test_after_a_stop_a_further_signal_ends_the_process_quietly(restore_stop_handlers) -> None:
    """The run has saved and is ending: the startup handler's "saves no checkpoint" would be
    false, and raising inside interpreter shutdown prints a traceback; the default action
    ends the process at once, without either."""
    exit_on_stop_signals("while testing")
    with StopSignals() as signals:
        signal.raise_signal(signal.SIGTERM)  # the trainer's handler: noted, the run goes on
        assert signals.received == signal.SIGTERM
    for signum in (signal.SIGINT, signal.SIGTERM):
        assert signal.getsignal(signum) is signal.SIG_DFL
