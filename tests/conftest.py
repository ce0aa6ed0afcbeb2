"""Shared fixtures: the shipped config shrunk to a few CPU batches, and a CLI runner."""

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from forked_scripts import start_script, stop_server, use_server

from builder import build_hooks, trainer_options
from trainer import Trainer
from utils.config.check import resolve_config

ROOT = Path(__file__).resolve().parent.parent

# A suite run inside a SLURM job (or a torchrun restart) trains runs of its own: the job's id
# must not name them, nor its restart count make them continue each other.
for variable in ("SLURM_JOB_ID", "SLURM_RESTART_COUNT", "TORCHELASTIC_RESTART_COUNT"):
    os.environ.pop(variable, None)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Several test processes share the cores: one thread each (and in the scripts they run),
    # rather than every process starting a thread per core and all of them contending.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _script_server():
    """The entry scripts' runs fork from a server (`tests/forked_scripts.py`) that has the
    suite's environment, as it is before any test changes it."""
    use_server(dict(os.environ))
    yield
    stop_server()


SESSION_ROOT_LEVEL = logging.getLogger().level


@pytest.fixture(autouse=True)
def _restore_logging():
    """A test that runs an entry point in process gets its logging set up (root level, console
    and file handlers); the next test starts with the logging it had before. Each test starts
    at the session's root level: a module-scoped fixture that ran an entry point (set up
    before this fixture) would otherwise leave the root at DEBUG for every later test."""
    root = logging.getLogger()
    root.setLevel(SESSION_ROOT_LEVEL)
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


# The shipped LeNet at a quarter of its width: the same code at a tenth of the compute, for
# the tests that train whole epochs (and resume, kill or restart them) many times.
NARROW = "arch.args.width=8"
# The environment of the ranks torchrun starts in the tests: on the CPU, one thread a rank,
# and a crash in native code (an abort in a library's teardown) shows every thread's Python stack.
RANK_ENV = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


@contextlib.contextmanager
def launched(
    command: list[str], env: dict | None = None, stdout: int = subprocess.PIPE
) -> Iterator[subprocess.Popen]:
    """`command` (torchrun, or a job script that starts it) from the project's root, its ranks
    with `RANK_ENV`, in a session of its own: on leaving (an end, a timeout, a failed
    assertion, the suite interrupted) whatever is left of it, its workers too, is killed."""
    environment = {**os.environ, **RANK_ENV, **(env or {})}
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=stdout, text=True,
                               stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def ended(command: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """`launched(command)` run to its end (at most 300 s)."""
    with launched(command, env) as process:
        stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def wait_until(happened: Callable[[], bool], process, what: str, every: float = 0.01) -> None:
    """Poll until `happened()` (an event: a file written, a line printed), at most 300 s; the
    process must still be running."""
    deadline = time.monotonic() + 300
    while not happened():
        if process.poll() is not None:
            stderr = process.communicate()[1] or ""
            pytest.fail(f"ended (code {process.returncode}) before {what}: {stderr[-3000:]}")
        assert time.monotonic() < deadline, f"no {what} within 300 s"
        time.sleep(every)


def wait_for(pattern: str, directory: Path, process) -> None:
    """Until a file matching `pattern` appears under `directory` (the run is past it)."""
    wait_until(lambda: any(directory.glob(pattern)), process, pattern)


def shrunk(save_dir: Path) -> list[str]:
    """`-o` arguments that shrink the shipped config to 2 epochs of 3 batches into `save_dir`."""
    return [
        "-o", f"trainer.save_dir={save_dir}",
        "-o", "trainer.epochs=2",
        "-o", "trainer.len_epoch=3",
        "-o", "trainer.save_period=1",
        "-o", f"data_loader.args.data_dir={ROOT / 'data'}",
        "-o", "data_loader.args.batch_size=32",
    ]  # fmt: skip


@pytest.fixture
def shrunk_overrides(tmp_path: Path) -> list[str]:
    """`shrunk`, with the outputs in this test's tmp_path."""
    return shrunk(tmp_path / "saved")


def computed_once(tmp_path_factory, name: str, compute: Callable[[Path], None]) -> Path:
    """A directory that `compute` fills once per test session, also when pytest-xdist runs the
    tests in several processes (they share the session's temporary root; a lock serialises
    them, and the others wait for the first to finish)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's root, above each worker's own
    directory = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / ".complete").exists():
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            compute(directory)
            (directory / ".complete").touch()
    return directory


@dataclass(frozen=True)
class TrainedRun:
    save_dir: Path
    stdout: str
    stderr: str

    @property
    def models(self) -> Path:
        return run_dir(self.save_dir)

    def copy_to(self, directory: Path) -> "TrainedRun":
        """A copy to change (resume, damage, evaluate into), leaving the shared run as it is."""
        shutil.copytree(self.save_dir, directory / "saved")
        return TrainedRun(directory / "saved", self.stdout, self.stderr)


@pytest.fixture(scope="session")
def shrunk_run(tmp_path_factory) -> TrainedRun:
    """The shipped config trained once per session with `shrunk` options (2 epochs of 3
    batches). Read it freely; `copy_to` a test's tmp_path before changing anything in it."""

    def train(directory: Path) -> None:
        result = run_script("train.py", "-c", str(ROOT / "config" / "config.json"),
                            *shrunk(directory / "saved"))  # fmt: skip
        assert result.returncode == 0, result.stderr
        (directory / "stdout.txt").write_text(result.stdout)
        (directory / "stderr.txt").write_text(result.stderr)

    directory = computed_once(tmp_path_factory, "shrunk_run", train)
    stdout, stderr = ((directory / f).read_text() for f in ("stdout.txt", "stderr.txt"))
    return TrainedRun(directory / "saved", stdout, stderr)


def run_script(
    script: str, *args: str, cwd: Path = ROOT, gpus: bool = False
) -> subprocess.CompletedProcess:
    """Run one of the entry scripts the way a user would, in a process of its own (forked
    from one that has imported torch, `tests/forked_scripts.py`); on the CPU unless `gpus`
    (then started afresh: a fork could not use CUDA)."""
    env = dict(os.environ) if gpus else {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    pipe = subprocess.PIPE
    process = start_script([script, *args], cwd=cwd, env=env, stdout=pipe, stderr=pipe)
    try:
        stdout, stderr = process.communicate(timeout=300)
    except BaseException:  # a timeout, or the suite interrupted: the run ends too
        process.kill()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_dir(save_dir: Path, name: str = "Mnist_LeNet") -> Path:
    """The one run directory under `save_dir/models/name`."""
    (found,) = (save_dir / "models" / name).iterdir()
    return found


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` (recursively) with its bytes: to show nothing changed."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*")
            if p.is_file()}  # fmt: skip


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def make_trainer(model, criterion, optimizer, config: dict, loader, valid_loader=None,
                 metric_fns=None, lr_scheduler=None) -> Trainer:  # fmt: skip
    """A supervised `Trainer` of already-built parts, with the hooks `config` asks for."""
    schedulers = {"model": lr_scheduler} if lr_scheduler is not None else {}
    return Trainer(
        {"model": model}, {"model": optimizer}, loader, criterion=criterion,
        metric_fns=metric_fns or {}, device=torch.device("cpu"), config=config,
        valid_data_loader=valid_loader, lr_schedulers=schedulers,
        hooks=build_hooks(config, dict.fromkeys(schedulers, "epoch")), **trainer_options(config),
    )  # fmt: skip


def assert_same_state(first, second, path: str = "checkpoint") -> None:
    """Two checkpoints (or parts of them) are equal bit for bit: tensors with `torch.equal`,
    everything else with `==`, naming the first path that differs."""
    if isinstance(first, torch.Tensor):
        assert isinstance(second, torch.Tensor) and torch.equal(first, second), path
    elif isinstance(first, dict):
        assert isinstance(second, dict) and first.keys() == second.keys(), path
        for key in first:
            assert_same_state(first[key], second[key], f"{path}[{key!r}]")
    elif isinstance(first, list | tuple):
        assert isinstance(second, list | tuple) and len(first) == len(second), path
        for index, (a, b) in enumerate(zip(first, second, strict=True)):
            assert_same_state(a, b, f"{path}[{index}]")
    else:
        assert first == second, f"{path}: {first!r} != {second!r}"


def assert_same_run(resumed: dict, uninterrupted: dict) -> None:
    """Everything a run changes is equal: weights, optimizer, schedule, scaler, counters,
    monitor, hooks and every random generator (the configs differ only in paths)."""
    assert resumed.keys() == uninterrupted.keys()
    for key in sorted(resumed.keys() - {"config"}, key=lambda k: k != "state_dict"):
        assert_same_state(resumed[key], uninterrupted[key], key)  # the weights first


def epoch_lines(output: str) -> dict[str, str]:
    """The logged epoch lines (`epoch N/M  step S  loss ...`) of a run's output, by epoch."""
    lines = [line for line in output.splitlines() if line.startswith("epoch ")]
    return {line.split()[1]: line for line in lines}


def toy_config(**trainer_options) -> dict:
    """A resolved config for parts built by hand (the nodes are not used): one quiet epoch."""
    options = {"epochs": 1, "progress_bar": False, "tensorboard": False, **trainer_options}
    return resolve_config({
        "name": "toy", "arch": {"type": "Linear"}, "data_loader": {"type": "None"},
        "optimizer": {"type": "SGD"}, "loss": "cross_entropy", "trainer": options,
    })  # fmt: skip


def pytest_collection_modifyitems(items: list) -> None:
    """The longest tests first: the tests of copies (their own suites take minutes), then the
    other slow ones. Started last, one would keep a worker busy long after the other had run
    out of tests; the many short ones fill the end instead."""

    def order(item) -> tuple[bool, bool, bool]:
        suite = item.nodeid.endswith("::test_make_test_installs_a_lean_copy_and_its_suite_passes")
        copies = item.nodeid.startswith("tests/test_new_project.py::")
        return not suite, not copies, item.get_closest_marker("slow") is None

    items.sort(key=order)
