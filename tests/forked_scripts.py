"""The entry scripts run in processes forked from a server that has imported torch already.

A test that runs `python train.py ...` would spend about 3 s of a 2-core machine's time
starting Python and importing torch and the libraries, more than most of those runs train.
The server imports the libraries once; each run is a fork of it that becomes the script, as
`python SCRIPT ARGS` would: its own process, with its own arguments, working directory,
environment, standard streams, exit code and signals, and `__main__`. The server imports no
module of the project, so each run imports those of its own working directory (a copy's,
too). Tests of the start-up itself (what a script imports, a signal while torch imports)
start Python afresh.

`python tests/forked_scripts.py NAME` is the server, on a socket of that name; after
`use_server`, `start_script` starts a run of it.
"""

import builtins
import contextlib
import gc
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

# What a run imports that takes long: imported here once, then shared by every fork.
PRELOADED = ("torch", "torch.utils.tensorboard", "torchvision", "torchmetrics", "pydantic",
             "numpy", "yaml", "tqdm")  # fmt: skip
# Variables read as Python starts or torch is imported: a run whose environment sets them
# otherwise than the server's (`TORCH_LOGS`, the GPUs) starts Python afresh.
READ_AT_START = ("PYTHON", "TORCH", "PYTORCH", "CUDA_", "OMP_", "MKL_")


def serve(address: str) -> None:
    """Accept runs until the process that started the server ends."""
    for name in PRELOADED:
        with contextlib.suppress(ImportError):  # (one a project has dropped is not needed)
            importlib.import_module(name)
    # Out of the collector's sight: every collection in a run would otherwise walk (and so
    # copy, page by page) the libraries' objects, which no run frees; its own go on as usual.
    gc.collect()
    gc.freeze()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the waiters are reaped without a wait
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind("\0" + address)  # (Linux's abstract names: no file to remove)
    listener.listen(64)
    listener.settimeout(1.0)
    owner = os.getppid()
    print("ready", flush=True)
    while os.getppid() == owner:
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        connection.settimeout(None)
        message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
        if os.fork() == 0:
            listener.close()
            _wait_for_run(connection, json.loads(message), fds)  # returns in the run only
            return
        connection.close()
        for fd in fds:
            os.close(fd)


def _wait_for_run(connection: socket.socket, request: dict, fds: list[int]) -> None:
    """In a fork of the server: fork the run, send its pid, wait, send its exit code (as
    `Popen.returncode` gives it: -N for signal N) and end. Only the run returns."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        connection.close()
        _become_script(request, fds)
        return
    try:
        for fd in fds:
            os.close(fd)
        connection.send(str(pid).encode())
        _, status = os.waitpid(pid, 0)
        connection.send(str(os.waitstatus_to_exitcode(status)).encode())
    finally:
        os._exit(0)


def _become_script(request: dict, fds: list[int]) -> None:
    """Run the script as the interpreter runs `python SCRIPT ARGS`: its streams, directory,
    environment, `sys.argv`, `sys.path[0]` and a fresh `__main__`. Its end (`sys.exit`, an
    exception, a signal) is the process's, as in any Python process."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = request["argv"]
    script = os.path.abspath(sys.argv[0])
    sys.path[0] = os.path.dirname(script)
    main = types.ModuleType("__main__")
    main.__file__, main.__builtins__ = script, builtins
    sys.modules["__main__"] = main
    code = compile(Path(script).read_bytes(), script, "exec")
    exec(code, main.__dict__)


class ScriptProcess:
    """A run of an entry script in a fork of the server, with the part of `subprocess.Popen`
    the tests use: `pid`, `stdout`, `stderr`, `returncode`, `poll`, `wait`, `communicate`,
    `send_signal`, `terminate` and `kill`."""

    def __init__(self, address: str, argv: list[str], cwd: Path, env: dict, stdout, stderr,
                 text: bool) -> None:  # fmt: skip
        self.args, self.returncode = argv, None
        ends = [_stream(None, 0, "w"), _stream(stdout, 1, "r"), _stream(stderr, 2, "r")]
        self._connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._connection.connect("\0" + address)
        request = {"argv": argv, "cwd": str(cwd), "env": env}
        socket.send_fds(self._connection, [json.dumps(request).encode()], [e[0] for e in ends])
        for theirs, _ in ends:
            os.close(theirs)
        mode = "r" if text else "rb"
        self.stdout, self.stderr = (None if ours is None else os.fdopen(ours, mode)
                                    for _, ours in ends[1:])  # fmt: skip
        self.pid = int(self._connection.recv(64))
        self._readers: dict[str, threading.Thread] = {}
        self._output: dict[str, str | bytes] = {}

    def poll(self) -> int | None:
        if self.returncode is None:
            self._connection.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                self._ended(self._connection.recv(64))
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._connection.settimeout(timeout)
            try:
                self._ended(self._connection.recv(64))
            except TimeoutError:
                raise subprocess.TimeoutExpired(self.args, timeout) from None
        return self.returncode

    def _ended(self, message: bytes) -> None:
        if not message:
            raise RuntimeError(f"the script server lost the run {self.args}")
        self.returncode = int(message)
        self._connection.close()

    def communicate(self, timeout: float | None = None) -> tuple:
        """Read both streams to their end, then wait (as `Popen.communicate`; may be called
        again after a `TimeoutExpired`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for name in ("stdout", "stderr"):
            stream = getattr(self, name)
            if stream is not None and name not in self._readers:
                reader = threading.Thread(target=self._read, args=(name, stream), daemon=True)
                self._readers[name] = reader
                reader.start()
        for reader in self._readers.values():
            reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return self._output.get("stdout"), self._output.get("stderr")

    def _read(self, name: str, stream) -> None:
        self._output[name] = stream.read()
        stream.close()

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _stream(option, fd: int, ours: str) -> tuple[int, int | None]:
    """(the run's end, our end or None) of one standard stream given as to `Popen`: PIPE,
    DEVNULL, a file, or None (this process's own)."""
    if option == subprocess.PIPE:
        read, write = os.pipe()
        return (read, write) if ours == "w" else (write, read)
    if option == subprocess.DEVNULL:
        return os.open(os.devnull, os.O_RDWR), None
    return os.dup(fd if option is None else option.fileno()), None


_server: dict = {}


def use_server(env: dict) -> None:
    """Let runs fork from a server with the suite's environment `env`: one per test process,
    started at its first run; on Linux only, whose sockets it uses. It sets up no CUDA (a
    fork could not use it): its runs are on the CPU."""
    if sys.platform == "linux":
        _server["env"] = {**env, "CUDA_VISIBLE_DEVICES": ""}


def stop_server() -> None:
    if "process" in _server:
        server = _server.pop("process")
        server.terminate()
        server.communicate()


def _read_at_start(env: dict) -> dict:
    return {key: value for key, value in env.items() if key.startswith(READ_AT_START)}


def start_script(argv: list[str], cwd: Path, env: dict, stdout=None, stderr=None,
                 text: bool = True) -> "ScriptProcess | subprocess.Popen":  # fmt: skip
    """`argv` (a script and its arguments) run as by `subprocess.Popen([sys.executable,
    *argv], ...)`, in a fork of the server. It is that `Popen` where there is no server, or
    where the run's environment differs from the server's in `READ_AT_START`."""
    if "env" not in _server or _read_at_start(env) != _read_at_start(_server["env"]):
        return subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env, stdout=stdout,
                                stderr=stderr, text=text)  # fmt: skip
    address = f"pytorch-template-scripts-{os.getpid()}"
    if "process" not in _server:
        server = subprocess.Popen([sys.executable, __file__, address], env=_server["env"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  text=True)  # fmt: skip
        assert server.stdout.readline() == "ready\n", "the script server did not start"
        _server["process"] = server
    return ScriptProcess(address, argv, cwd, env, stdout, stderr, text)


if __name__ == "__main__":
    serve(sys.argv[1])
