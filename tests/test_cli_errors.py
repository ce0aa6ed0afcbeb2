"""Bad input through the real command line: one line on stderr, exit 2, no run directory."""

from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_script

import train
from utils.cli import run_main

CONFIG = str(ROOT / "config" / "config.json")


def run_in_process(main, argv: list[str], capsys) -> tuple[int, str]:
    """Run an entry point's `main` through `run_main`, as `__main__` does: (exit code, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda _: main(argv))
    return exit_info.value.code, capsys.readouterr().err


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
        ("seed=-1", ["seed", "integer >= 0"]),
    ],
)
def test_bad_config_value(tmp_path: Path, capsys, override: str, fragments: list[str]) -> None:
    save_dir = tmp_path / "saved"
    argv = ["-c", CONFIG, "-o", f"trainer.save_dir={save_dir}", "-o", override]
    code, stderr = run_in_process(train.main, argv, capsys)
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1, stderr
    for fragment in fragments:
        assert fragment in stderr
    assert not save_dir.exists()


def test_config_error_through_the_real_script(tmp_path: Path) -> None:
    save_dir = tmp_path / "saved"
    result = run_script("train.py", "-c", CONFIG, "-o", f"trainer.save_dir={save_dir}",
                        "-o", "arch.type=LeNett")  # fmt: skip
    assert_usage_error(result, "arch.type", "did you mean 'LeNet'")
    assert not save_dir.exists()


def test_bad_config_files(tmp_path: Path) -> None:
    assert_usage_error(run_script("train.py", "-c", str(tmp_path / "nope.json")), "nope.json")
    (tmp_path / "broken.json").write_text('{"name": ')
    assert_usage_error(
        run_script("train.py", "-c", str(tmp_path / "broken.json")), "not valid JSON"
    )
    (tmp_path / "config.toml").write_text("")
    assert_usage_error(run_script("train.py", "-c", str(tmp_path / "config.toml")), ".yaml")


def test_usage_errors() -> None:
    assert_usage_error(run_script("train.py"), "-c", "-r")
    assert_usage_error(run_script("train.py", "-c", CONFIG, "-o", "epochs"), "KEY=VALUE")
    assert_usage_error(run_script("train.py", "-c", CONFIG, "--bogus"), "--bogus")
    assert_usage_error(run_script("train.py", "-c", CONFIG, "-d", "tpu"), "-d tpu")
    if not torch.cuda.is_available():
        assert_usage_error(run_script("train.py", "-c", CONFIG, "-d", "cuda"), "CUDA")
    assert_usage_error(run_script("test.py"), "--resume")


def test_bad_checkpoints(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pth"
    assert_usage_error(run_script("train.py", "-r", str(missing)), "missing.pth", "no such file")
    assert_usage_error(run_script("test.py", "-r", str(missing)), "missing.pth")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    assert_usage_error(run_script("train.py", "-r", str(text)), "notes.pth", "not a checkpoint")
    weights = tmp_path / "weights.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, weights)
    assert_usage_error(run_script("test.py", "-r", str(weights)), "weights.pth", "not a checkpoint")


def test_resume_refuses_other_arch(tmp_path: Path, shrunk_overrides: list[str]) -> None:
    result = run_script("train.py", "-c", CONFIG, *shrunk_overrides, "-o", "trainer.epochs=1")
    assert result.returncode == 0, result.stderr
    (checkpoint,) = (tmp_path / "saved" / "models" / "Mnist_LeNet").glob("*/checkpoint-epoch1.pth")
    state = torch.load(checkpoint, weights_only=True)
    state["arch"] = "ResNet"
    torch.save(state, checkpoint)
    before = sorted(p.name for p in checkpoint.parent.iterdir())
    assert_usage_error(run_script("train.py", "-r", str(checkpoint)), "arch.type", "'ResNet'")
    assert_usage_error(run_script("test.py", "-r", str(checkpoint)), "arch.type", "'ResNet'")
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == before
