"""Runs past one process's life: two torchrun "nodes" on this machine, a worker killed under
`torchrun --max-restarts`, and SLURM's time-limit signal with a requeue (a stand-in
`scontrol`). Each ends bit for bit like one uninterrupted 2-process run."""

import os
import signal
import socket
import sys
from pathlib import Path

import pytest
from conftest import (
    NARROW,
    ROOT,
    TORCHRUN,
    assert_same_run,
    computed_once,
    ended,
    launched,
    load,
    run_dir,
    run_script,
    snapshot,
    wait_for,
)

import train
from utils.run.job import continue_restarted_job, restart_count

CONFIG = str(ROOT / "config" / "config.json")
TWO_RANKS = ["--standalone", "--nproc_per_node=2"]
# 2 epochs of 30 steps (batches of 32 per rank), a step checkpoint every 3 steps; ranks agree
# on a stop at log steps, every 3rd.
SETTINGS = [
    "trainer.epochs=2", "trainer.len_epoch=30", "trainer.save_every_steps=3", "trainer.log_step=3",
    "trainer.progress_bar=false", "trainer.tensorboard=false",
    f"data_loader.args.data_dir={ROOT / 'data'}", "data_loader.args.batch_size=32", NARROW,
]  # fmt: skip


def options(save_dir: Path) -> list[str]:
    settings = [f"trainer.save_dir={save_dir}", *SETTINGS]
    return ["-c", CONFIG, "-d", "cpu", *(item for s in settings for item in ("-o", s))]


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> dict:
    """The last checkpoint of the run never interrupted: `--standalone --nproc_per_node=2`."""

    def train_once(directory: Path) -> None:
        result = ended([*TORCHRUN, *TWO_RANKS, "train.py", *options(directory / "saved")])
        assert result.returncode == 0, result.stderr[-3000:]

    directory = computed_once(tmp_path_factory, "two_rank_reference", train_once)
    return load(run_dir(directory / "saved") / "checkpoint-epoch2.pth")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_ids(marker: str, entry: bytes | None = None, command: str = "") -> list[int]:
    """The processes started with `marker` in their environment (`MARKER=...`), with the
    environment `entry` too (b"RANK=1") and `command` in their command line."""
    found = []
    for process in Path("/proc").iterdir():
        try:
            environment = (process / "environ").read_bytes().split(b"\0")
            command_line = (process / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):
            continue
        marked = f"MARKER={marker}".encode() in environment
        if marked and (entry is None or entry in environment) and command in command_line:
            found.append(int(process.name))
    return found


def slurm_stand_ins(tmp_path: Path, job_id: int, nodes: int, processes_per_node: int) -> dict:
    """The environment of a SLURM job for running the sbatch scripts here: stand-ins for
    `srun` (one task per node, at once) and `scontrol` (recording what it is asked, and
    naming this machine as every node), and SLURM's variables."""
    stand_ins = tmp_path / "bin"
    stand_ins.mkdir()
    (stand_ins / "srun").write_text(
        "#!/bin/sh\n"
        "for node in $(seq 0 $((SLURM_NNODES - 1))); do\n"
        '  SLURM_NODEID=$node "$@" & tasks="$tasks $!"\n'
        "done\nstatus=0; for task in $tasks; do wait $task || status=$?; done; exit $status\n"
    )
    (stand_ins / "scontrol").write_text(
        '#!/bin/sh\nif [ "$1" = show ]; then echo 127.0.0.1\n'
        'else echo "$@" >> "$SCONTROL_CALLS"; fi\n'
    )
    for script in stand_ins.iterdir():
        script.chmod(0o755)
    path = f"{stand_ins}:{Path(sys.executable).parent}:{os.environ['PATH']}"  # torchrun's too
    return {
        "SLURM_JOB_ID": str(job_id), "SLURM_NNODES": str(nodes), "SLURM_JOB_NODELIST": "n",
        "SLURM_GPUS_ON_NODE": str(processes_per_node), "PATH": path, "VENV": "/nonexistent",
        "SCONTROL_CALLS": str(tmp_path / "scontrol_calls.txt"), "MARKER": str(tmp_path),
    }  # fmt: skip


def sbatch(script: str, save_dir: Path) -> list[str]:
    """A SLURM job's batch script, run here as SLURM would run it (from the project's root)."""
    return ["bash", f"slurm/{script}", *options(save_dir)[1:]]  # the config first, as -c's value


@pytest.mark.slow
def test_two_nodes_train_what_one_node_of_two_processes_trains(tmp_path, reference) -> None:
    """slurm/train_multinode.sbatch over two "nodes" of this machine: two torchrun launchers,
    `--nnodes=2 --node_rank=R --nproc_per_node=1`, train the same weights, optimizer and
    generators as `--standalone --nproc_per_node=2`; rank 0 writes the one run directory;
    each node's console says which ranks it runs."""
    port = next(p for p in iter(free_port, None) if 20000 <= p < 40000)  # the script's range
    env = slurm_stand_ins(tmp_path, job_id=port - 20000, nodes=2, processes_per_node=1)
    result = ended(sbatch("train_multinode.sbatch", tmp_path / "saved"), env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in (tmp_path / "saved" / "models" / "Mnist_LeNet").iterdir()] == [
        str(port - 20000)
    ]  # named after the job
    assert_same_run(load(run_dir(tmp_path / "saved") / "checkpoint-epoch2.pth"), reference)
    for rank in (0, 1):
        node = f"node {rank} of 2 ({socket.gethostname()}): ranks {rank}-{rank} of 2"
        assert node in result.stdout
    assert result.stdout.count("epoch 2/2") == 2  # the other node's console follows the run too


@pytest.mark.slow
def test_a_node_that_never_arrives_ends_at_torchrun_s_rendezvous_timeout(tmp_path) -> None:
    """Node 0 alone: torchrun waits for the other node up to its rendezvous timeout (here
    5 s), then ends with its own error, its last line saying how many joined; train.py never
    started, so nothing is written."""
    node = [
        "--nnodes=2",
        "--node_rank=0",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
    ]
    result = ended([*TORCHRUN, *node, "--nproc_per_node=1", "--rdzv-conf", "timeout=5",
                    "train.py", *options(tmp_path / "saved")])  # fmt: skip
    assert result.returncode != 0
    assert "1/2 clients joined" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "saved").exists()


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_continues_its_own_run(tmp_path, reference) -> None:
    """`torchrun --max-restarts=1 ... --run-id ID`: rank 1 killed (SIGKILL) once a step
    checkpoint exists; torchrun starts both ranks again, they continue run ID from its newest
    checkpoint, and the run ends as the uninterrupted one did."""
    save_dir = tmp_path / "saved"
    command = [*TORCHRUN, *TWO_RANKS, "--max-restarts=1", "train.py", *options(save_dir),
               "--run-id", "restarted"]  # fmt: skip
    with launched(command, env={"MARKER": str(tmp_path)}) as launcher:
        wait_for("models/*/restarted/checkpoint-step*.pth", save_dir, launcher)
        (rank_1,) = process_ids(str(tmp_path), b"RANK=1", "train.py")
        os.kill(rank_1, signal.SIGKILL)
        stdout, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, stderr[-3000:]
    models = save_dir / "models" / "Mnist_LeNet" / "restarted"
    assert "this job was started again (1 restart(s)): it continues its run" in stdout
    assert "resuming in epoch 1 of 2, after " in stdout  # from a step checkpoint, not afresh
    assert [p.name for p in (save_dir / "models" / "Mnist_LeNet").iterdir()] == ["restarted"]
    assert_same_run(load(models / "checkpoint-epoch2.pth"), reference)


@pytest.mark.slow
def test_slurm_s_time_limit_signal_saves_requeues_and_the_requeued_job_resumes(
    tmp_path, reference
) -> None:
    """slurm/train.sbatch with 2 processes: SIGUSR1 (`--signal=USR1@90`) to torchrun's agent,
    which must live on, and to rank 1: both ranks stop at the same log step with a
    checkpoint, rank 0 runs `scontrol requeue $SLURM_JOB_ID` once, every rank exits 138. The
    requeued job (SLURM_RESTART_COUNT=1, the same script) continues the run named after the
    job and ends as the uninterrupted run did."""
    env = slurm_stand_ins(tmp_path, job_id=4242, nodes=1, processes_per_node=2)
    save_dir = tmp_path / "saved"
    with launched(sbatch("train.sbatch", save_dir), env) as job:
        wait_for("models/*/4242/checkpoint-step*.pth", save_dir, job)
        (agent,) = process_ids(str(tmp_path), command=f"{Path(sys.executable).parent}/torchrun")
        (rank_1,) = process_ids(str(tmp_path), b"RANK=1", "train.py")
        for process in (agent, rank_1):
            os.kill(process, signal.SIGUSR1)
        stdout, stderr = job.communicate(timeout=300)
    assert job.returncode != 0 and stderr.count("stopped by SIGUSR1") == 2, stderr[-3000:]
    calls = tmp_path / "scontrol_calls.txt"
    assert calls.read_text() == "requeue 4242\n"
    assert "requeued SLURM job 4242: when it starts again, it resumes this run" in stdout
    models = save_dir / "models" / "Mnist_LeNet" / "4242"
    stopped_at = max(load(path)["step"] for path in models.glob("checkpoint-*.pth"))
    assert stopped_at % 3 == 0 and stopped_at < reference["step"]

    result = ended(sbatch("train.sbatch", save_dir), {**env, "SLURM_RESTART_COUNT": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming in epoch {1 + (stopped_at >= 30)} of 2" in result.stdout
    assert_same_run(load(models / "checkpoint-epoch2.pth"), reference)
    assert calls.read_text() == "requeue 4242\n"  # not again


def test_a_restarted_job_whose_run_had_finished_ends_with_0_and_one_line(
    tmp_path, monkeypatch
) -> None:
    """A job started again after its run's last epoch (it died on the way out, or SLURM
    requeued it late) has nothing to do: exit 0 with one line, the run untouched. (It once
    exited 2, "nothing is left to train", and the launcher counted the job failed.)"""
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    saved = tmp_path / "saved"
    command = ["train.py", *options(saved), "-o", "trainer.len_epoch=2", "--run-id", "job"]
    assert run_script(*command).returncode == 0
    models = saved / "models" / "Mnist_LeNet" / "job"
    files = snapshot(saved)

    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    again = run_script(*command)
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""
    assert again.stdout == (f"this job was started again after its run ended: {models}/"
                            "checkpoint-epoch2.pth has completed its 2 epoch(s); nothing is "
                            "left to do\n")  # fmt: skip
    assert snapshot(saved) == files


def test_the_run_id_of_a_slurm_job_is_its_id_and_a_restart_finds_its_run(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    args = train.parse_args(["-c", CONFIG])
    assert args.run_id == "77" and restart_count() == 0
    assert train.parse_args(["-c", CONFIG, "--run-id", "mine"]).run_id == "mine"
    assert train.parse_args(["-r", str(tmp_path)]).run_id is None  # a resume keeps its own
    assert continue_restarted_job(args, str(tmp_path), "Toy") is None  # a first start
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert continue_restarted_job(args, str(tmp_path), "Toy") is None  # no such run yet
    run = tmp_path / "models" / "Toy" / "77"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    level, line = continue_restarted_job(args, str(tmp_path), "Toy")
    assert "(2 restart(s)): it continues its run" in line
    assert (args.resume, args.config, args.run_id) == (str(run), None, None)
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    monkeypatch.delenv("SLURM_RESTART_COUNT")
    level, line = continue_restarted_job(train.parse_args(["-c", CONFIG]), str(tmp_path), "Toy")
    assert level == 30 and "without --run-id: it cannot know its run" in line
