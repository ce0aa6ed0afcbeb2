"""Bad input through the real command line: one line on stderr, exit 2, no run directory."""

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TrainedRun, run_script

import train
from utils.cli import run_main

# test.py by its path: `import test` could find the standard library's test package.
_spec = importlib.util.spec_from_file_location("test_script", ROOT / "test.py")
test_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(test_script)

CONFIG = str(ROOT / "config" / "config.json")


def run_in_process(main, argv: list[str], capsys) -> tuple[int, str]:
    """Run an entry point's `main` through `run_main`, as `__main__` does: (exit code, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda _: main(argv))
    return exit_info.value.code, capsys.readouterr().err


def assert_refused(main, argv: list[str], capsys, *fragments: str) -> None:
    """In process (no interpreter start): exit code 2 and one line naming every fragment."""
    code, stderr = run_in_process(main, argv, capsys)
    assert code == 2, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    for fragment in fragments:
        assert fragment in stderr


def assert_usage_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("arch.type=LeNett", ["arch.type", "'LeNett'", "did you mean 'LeNet'"]),
        ("optimizer.type=Adamm", ["optimizer.type", "torch.optim", "did you mean 'Adam'"]),
        ("optimizer.type=os.system", ["optimizer.type", "not a public name"]),
        ("loss=__import__", ["loss.type", "not a public name"]),
        ("lr_scheduler.type=StepLr", ["lr_scheduler.type", "did you mean 'StepLR'"]),
        ("metrics=[accuracy, acuracy]", ["metrics[1].type", "did you mean 'accuracy'"]),
        ("trainer.epoch=3", ["trainer.epoch", "unknown key", "did you mean 'epochs'"]),
        ("trainer.epochs=abc", ["trainer.epochs", "'abc'", "integer >= 1"]),
        ("trainer.epochs=0", ["trainer.epochs", "integer >= 1"]),
        (
            "trainer.monitor=min val_los",
            ["trainer.monitor", "'val_los'", "did you mean 'val_loss'"],
        ),
        ("trainer.monitor=lowest val_loss", ["trainer.monitor", "'off', 'min METRIC'"]),
        (
            "data_loader.args.batchsize=3",
            ["data_loader.args.batchsize", "did you mean 'batch_size'"],
        ),
        ("data_loader.args.batch_size=0", ["data_loader.args", "batch_size"]),
        ("data_loader.args.validation_split=1.5", ["data_loader.args", "validation_split"]),
        ("data_loader.args.data_dir=/nonexistent", ["data_loader.args.data_dir", "/nonexistent"]),
        ("optimizer.args.lr=-1", ["optimizer.args", "Adam", "learning rate"]),
        ("arch.args.widht=3", ["arch.args.widht", "LeNet takes no argument"]),
        # (not mse_loss: a project may well define that one in model/loss.py)
        ("loss=Mse_Loss", ["loss.type", "'Mse_Loss'", "did you mean 'MSELoss'"]),
        ("seed=-1", ["seed", "integer >= 0"]),
        ("test.reprt=none", ["test.reprt", "unknown key", "did you mean 'report'"]),
        ("test=5", ["test", "expected a mapping"]),
        ("trainer.strategy=fsdp", ["trainer.strategy: 'fsdp' spreads a run over the processes "
                                   "torchrun starts", "-o trainer.strategy=null"]),
        ("trainer.strategy=ddp", ["trainer.strategy: 'ddp' spreads"]),
        ("trainer.strategy=zero", ["trainer.strategy: 'zero' is not valid; expected 'ddp', "
                                   "'fsdp' or null"]),
    ],
)  # fmt: skip
def test_bad_config_value(tmp_path: Path, capsys, override: str, fragments: list[str]) -> None:
    save_dir = tmp_path / "saved"
    argv = ["-c", CONFIG, "-o", f"trainer.save_dir={save_dir}", "-o", override]
    assert_refused(train.main, argv, capsys, *fragments)
    assert not save_dir.exists()


def test_config_error_through_the_real_script(tmp_path: Path) -> None:
    save_dir = tmp_path / "saved"
    result = run_script("train.py", "-c", CONFIG, "-o", f"trainer.save_dir={save_dir}",
                        "-o", "arch.type=LeNett")  # fmt: skip
    assert_usage_error(result, "arch.type", "did you mean 'LeNet'")
    assert not save_dir.exists()


def test_bad_config_files(tmp_path: Path, capsys) -> None:
    assert_refused(train.main, ["-c", str(tmp_path / "nope.json")], capsys, "nope.json")
    (tmp_path / "broken.json").write_text('{"name": ')
    assert_refused(train.main, ["-c", str(tmp_path / "broken.json")], capsys, "not valid JSON")
    # PyYAML's own message quotes the line and a caret, which one line would run together.
    (tmp_path / "tab.yaml").write_text("name: x\narch:\n  type: LeNet\n\targs: {}\n")
    code, stderr = run_in_process(train.main, ["-c", str(tmp_path / "tab.yaml")], capsys)
    assert (code, stderr) == (2, f"error: config file {tmp_path / 'tab.yaml'}: not valid YAML: "
                              "line 4, column 1: found character '\\t' that cannot start any "
                              "token (while scanning for the next token)\n")  # fmt: skip
    (tmp_path / "config.toml").write_text("")
    assert_refused(train.main, ["-c", str(tmp_path / "config.toml")], capsys, ".yaml")


def test_usage_errors(capsys) -> None:
    assert_refused(train.main, [], capsys, "-c", "-r")
    assert_refused(train.main, ["-c", CONFIG, "-o", "epochs"], capsys, "KEY=VALUE")
    assert_refused(train.main, ["-c", CONFIG, "--bogus"], capsys, "--bogus")
    assert_refused(train.main, ["-c", CONFIG, "-d", "tpu"], capsys, "-d tpu")
    if not torch.cuda.is_available():
        assert_refused(train.main, ["-c", CONFIG, "-d", "cuda"], capsys, "CUDA")
    assert_refused(test_script.main, [], capsys, "--resume")


def test_bad_checkpoints(tmp_path: Path, capsys) -> None:
    missing = str(tmp_path / "missing.pth")
    assert_refused(train.main, ["-r", missing], capsys, "missing.pth", "no such file")
    assert_refused(test_script.main, ["-r", missing], capsys, "missing.pth")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    assert_refused(train.main, ["-r", str(text)], capsys, "notes.pth", "not a checkpoint")
    weights = tmp_path / "weights.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, weights)
    assert_refused(test_script.main, ["-r", str(weights)], capsys, "weights.pth", "missing")
    assert_refused(test_script.main, ["-r", str(tmp_path)], capsys, "no model_best.pth and no")


def test_the_directory_above_runs_names_them(tmp_path: Path, capsys) -> None:
    """`-r saved/models/NAME` is one level short: the message names its runs, the one last
    written to last (by time, not name: run ids may be anything)."""
    for written, run in enumerate(("zeta", "alpha", "notes")):
        (tmp_path / run).mkdir()
        if run != "notes":  # (a directory without checkpoints is not a run)
            (tmp_path / run / "checkpoint-epoch1.pth").write_bytes(b"")
            os.utime(tmp_path / run / "checkpoint-epoch1.pth", (1e9 + written, 1e9 + written))
    hint = f"; it holds the runs zeta, alpha: give one, such as -r {tmp_path / 'alpha'}"
    assert_refused(test_script.main, ["-r", str(tmp_path)], capsys, f"in this directory{hint}")
    assert_refused(train.main, ["-r", str(tmp_path)], capsys, f"in this directory{hint}")


def test_resume_refuses_other_arch(tmp_path: Path, shrunk_run: TrainedRun) -> None:
    checkpoint = shrunk_run.copy_to(tmp_path).models / "checkpoint-epoch1.pth"
    state = torch.load(checkpoint, weights_only=True)
    state["arch"] = "ResNet"
    torch.save(state, checkpoint)
    before = sorted(p.name for p in checkpoint.parent.iterdir())
    assert_usage_error(run_script("train.py", "-r", str(checkpoint)), "arch.type", "'ResNet'")
    assert_usage_error(run_script("test.py", "-r", str(checkpoint)), "arch.type", "'ResNet'")
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == before


def test_test_py_under_torchrun_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    """Every rank would evaluate the whole test split and write the same file."""
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    run = str(tmp_path / "run")
    said = f"test.py evaluates in one process, not shared out by torchrun; run it as python " \
        f"test.py -r {run}"  # fmt: skip
    assert_refused(test_script.main, ["-r", run], capsys, f"error: {said}")
