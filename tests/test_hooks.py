"""The hooks package: the EMA hook, on a toy model and through the real command line."""

import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    ROOT,
    assert_same_run,
    assert_same_state,
    load,
    read_json,
    run_dir,
    run_script,
    shrunk,
)
from torch import nn

import train
import trainer.hooks as hook_package
from base import Hook
from builder import build_data_loader
from model.model import LeNet
from trainer.hooks.ema import EMA
from utils.cli import run_main
from utils.errors import UserError

CONFIG = str(ROOT / "config" / "config.json")
AVERAGED = "EMA(model=model, decay=0.9, warmup=False)"  # evaluated in validation
PASSIVE = "EMA(model=model, decay=0.5, warmup=True)"  # averaged, not evaluated
HOOKS = (
    "trainer.hooks=[{type: EMA, args: {decay: 0.9}},"
    " {type: EMA, args: {decay: 0.5, warmup: true, evaluate: false}}]"
)


def toy_trainer(*hooks: EMA) -> SimpleNamespace:
    """What the EMA hook reads of a trainer: a Linear and a BatchNorm (an integer buffer)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    return SimpleNamespace(bare_models={"model": model}, hooks=list(hooks))


def train_toy(trainer: SimpleNamespace, steps: int) -> list[dict[str, torch.Tensor]]:
    """SGD steps on random data, the hooks' `after_step` after each; the weights after each."""
    model = trainer.bare_models["model"]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    history = []
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(8, 3)).square().mean().backward()  # also moves the BatchNorm stats
        optimizer.step()
        for hook in trainer.hooks:
            hook.after_step(trainer)
        history.append({k: v.clone() for k, v in model.state_dict().items()})
    return history


def weights_equal(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_is_the_hand_computed_average(warmup: bool) -> None:
    ema = EMA(decay=0.9, warmup=warmup)
    trainer = toy_trainer(ema)
    ema.before_train(trainer)
    expected = {k: v.double() for k, v in trainer.bare_models["model"].state_dict().items()}
    for t, weights in enumerate(train_toy(trainer, 5)):
        decay = min(0.9, (1 + t) / (10 + t)) if warmup else 0.9
        for key, value in weights.items():
            floating = value.is_floating_point()
            expected[key] = decay * expected[key] + (1 - decay) * value if floating else value
    assert ema.updates == 5 and ema.shadow.keys() == expected.keys()
    for key, value in ema.shadow.items():
        torch.testing.assert_close(value.double(), expected[key].double(), rtol=1e-6, atol=1e-6)
    assert ema.shadow["1.num_batches_tracked"] == 5  # copied, not averaged


def test_validation_sees_the_average_and_training_gets_its_weights_back(caplog) -> None:
    ema, passive = EMA(decay=0.9), EMA(decay=0.5, evaluate=False)
    trainer = toy_trainer(ema, passive)
    for hook in trainer.hooks:
        hook.before_train(trainer)
    training = train_toy(trainer, 3)[-1]
    model = trainer.bare_models["model"]
    for hook in trainer.hooks:
        hook.before_validation(trainer)
    assert weights_equal(model.state_dict(), ema.shadow)
    for hook in trainer.hooks:
        hook.after_validation(trainer)
    assert weights_equal(model.state_dict(), training)

    unsaved = EMA(decay=0.9)  # test.py on a checkpoint without its state: the model's own
    own = toy_trainer(unsaved)
    before = {k: v.clone() for k, v in own.bare_models["model"].state_dict().items()}
    unsaved.before_validation(own)
    assert weights_equal(own.bare_models["model"].state_dict(), before)
    assert "no averaged weights" in caplog.text

    resumed = EMA(decay=0.9)  # a resumed run: the state comes back through the checkpoint
    resumed.load_state_dict(ema.state_dict())
    resumed.before_train(toy_trainer(resumed))
    assert weights_equal(resumed.shadow, ema.shadow) and resumed.updates == 3


@pytest.mark.parametrize(
    ("hooks", "fragment"),
    [
        ([EMA(model="generator")], "trainer.hooks.args.model: 'generator' is not a model of"),
        ([EMA(decay=0.9), EMA(decay=0.5)], "two EMA hooks evaluate 'model'"),
    ],
)
def test_ema_refuses_what_it_cannot_do(hooks: list[EMA], fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        hooks[0].check(toy_trainer(*hooks))


def run_train_in_process(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda _: train.main(argv))
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("hooks", "fragments"),
    [
        (
            "[{type: EMA, args: {decay: 1.5}}]",
            ["trainer.hooks[0].args.decay: 1.5 is not valid for EMA", "less than 1"],
        ),
        (
            "[{type: EMA, args: {model: [1]}}]",
            ["trainer.hooks[0].args.model: [1] is not valid for EMA", "a valid string"],
        ),
        (
            "[{type: EarlyStopping, args: {early_stop: x}}]",
            ["trainer.hooks[0].args.early_stop: 'x' is not valid for EarlyStopping", "integer"],
        ),
        (
            "[{type: EarlyStopping, args: {early_stop: '3'}}]",
            ["trainer.hooks[0].args.early_stop: '3' is a string; EarlyStopping takes int"],
        ),
        (
            "[{type: EarlyStopping, args: {early_stop: true}}]",
            ["trainer.hooks[0].args.early_stop: True is a boolean; EarlyStopping takes int"],
        ),
        (  # the shipped config has progress_bar: true
            "[{type: ProgressBar, args: {unknown: 1}}]",
            [
                "trainer.hooks[0]: ProgressBar is a built-in hook, already added by "
                "trainer.progress_bar"
            ],
        ),
        (
            "[{type: EMA}, {type: EMA}]",
            ["trainer.hooks", "two hooks", "EMA(model=model, decay=0.999"],
        ),
        (
            "[{type: EMA, args: {decai: 1}}]",
            ["trainer.hooks[0].args.decai", "did you mean 'decay'"],
        ),
        (  # checked when the trainer is built, before any run directory exists
            "[{type: EMA, args: {decay: 0.9}}, {type: EMA, args: {model: generator}}]",
            ["trainer.hooks[1].args.model: 'generator' is not a model of this run"],
        ),
    ],
)
def test_bad_ema_configs_are_one_line_errors(tmp_path: Path, capsys, hooks, fragments) -> None:
    """(With `trainer.early_stop: 0`, EarlyStopping is a hook like any of the user's.)"""
    save_dir = tmp_path / "saved"
    argv = ["-c", CONFIG, "-o", f"trainer.save_dir={save_dir}", "-o", f"trainer.hooks={hooks}",
            "-o", "trainer.early_stop=0"]  # fmt: skip
    code, stderr = run_train_in_process(argv, capsys)
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1, stderr
    for fragment in fragments:
        assert fragment in stderr
    assert not save_dir.exists()


@pytest.mark.parametrize("args", ["", ", args: {early_stop: 3}", ", args: {early_stop: x}"])
def test_a_built_in_hook_in_trainer_hooks_is_named_before_its_arguments(tmp_path, capsys, args):
    """What is wrong is listing it at all (the shipped config's early_stop: 10 adds it), not
    a missing or bad argument of the copy that would clash with it."""
    save_dir = tmp_path / "saved"
    argv = ["-c", CONFIG, "-o", f"trainer.save_dir={save_dir}",
            "-o", f"trainer.hooks=[{{type: EarlyStopping{args}}}]"]  # fmt: skip
    code, stderr = run_train_in_process(argv, capsys)
    assert (code, stderr) == (2, "error: trainer.hooks[0]: EarlyStopping is a built-in hook, "
                              "already added by trainer.early_stop; set that key to configure "
                              "it\n")  # fmt: skip
    assert not save_dir.exists()


class Shout(Hook):
    """A user's own hook, with typed arguments and nothing else that checks them."""

    def __init__(self, words: list[str], volume: Literal["loud", "quiet"] = "loud",
                 repeat: Literal[1, 2] = 1) -> None:  # fmt: skip
        self.words, self.volume, self.repeat = words, volume, repeat


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ("{words: hello}", "trainer.hooks[0].args.words: 'hello' is not valid for Shout: input "
                           "should be a valid list"),
        ("{words: [hi, 2]}", "trainer.hooks[0].args.words[1]: input should be a valid string "
                             "(in ['hi', 2], for Shout)"),
        ("{words: [hi], volume: 11}", "trainer.hooks[0].args.volume: 11 is not valid for Shout: "
                                      "input should be 'loud' or 'quiet'"),
        ("{words: [hi], repeat: true}", "trainer.hooks[0].args.repeat: True is a boolean; Shout "
                                        "takes Literal[1, 2] here"),
    ],
)  # fmt: skip
def test_a_users_own_hook_is_checked_by_its_type_hints(tmp_path, capsys, monkeypatch, args,
                                                       fragment) -> None:  # fmt: skip
    """The type hints of a hook's constructor are its schema: a wrong value is refused before
    the run directory exists, with no check written for it."""
    monkeypatch.setattr(hook_package, "Shout", Shout, raising=False)
    save_dir = tmp_path / "saved"
    argv = ["-c", CONFIG, "-o", f"trainer.save_dir={save_dir}",
            "-o", f"trainer.hooks=[{{type: Shout, args: {args}}}]"]  # fmt: skip
    code, stderr = run_train_in_process(argv, capsys)
    assert (code, stderr.strip()) == (2, f"error: {fragment}"), stderr
    assert not save_dir.exists()


def readme_hook_example() -> dict:
    """The namespace of the README's example hook (the Python block that defines StopAbove)."""
    text = (ROOT / "README.md").read_text()
    block = next(part.split("```")[0] for part in text.split("```python\n")[1:]
                 if "class StopAbove(Hook):" in part.split("```")[0])  # fmt: skip
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    return namespace


def test_the_readme_example_hook_checks_its_name_and_stops_the_run(
    tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(hook_package, "StopAbove", readme_hook_example()["StopAbove"],
                        raising=False)  # fmt: skip
    save_dir = tmp_path / "saved"
    argv = ["-c", CONFIG, *shrunk(save_dir), "-o", "trainer.progress_bar=false", "-o",
            "trainer.hooks=[{type: StopAbove, args: {name: val_acuracy}}]"]  # fmt: skip
    code, stderr = run_train_in_process(argv, capsys)
    assert (code, stderr) == (2, "error: trainer.hooks[0].args.name: 'val_acuracy' is not "
                              "logged by this run; did you mean 'val_accuracy' or "
                              "'accuracy'?\n")  # fmt: skip
    assert not save_dir.exists()
    argv[-1] = "trainer.hooks=[{type: StopAbove, args: {name: val_accuracy, threshold: 0.0}}]"
    code, stderr = run_train_in_process(argv, capsys)
    assert code == 0, stderr
    (log,) = save_dir.rglob("info.log")
    assert "a hook ended the run at step 3 (epoch 1 done)" in log.read_text()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped config shrunk as by `shrunk_overrides` (2 epochs of 3 batches of 32), with a
    step checkpoint in the middle of epoch 2: one run without hooks, one with two EMA hooks."""
    runs = {}
    for name, extra in (("plain", []), ("ema", ["-o", HOOKS])):
        save_dir = tmp_path_factory.mktemp(name) / "saved"
        options = [
            "-o", f"trainer.save_dir={save_dir}", "-o", "trainer.epochs=2",
            "-o", "trainer.len_epoch=3", "-o", "trainer.save_period=1",
            "-o", f"data_loader.args.data_dir={ROOT / 'data'}",
            "-o", "data_loader.args.batch_size=32", "-o", "trainer.save_every_steps=4",
            "-o", "trainer.progress_bar=false", *extra,
        ]  # fmt: skip
        result = run_script("train.py", "-c", CONFIG, *options)
        assert result.returncode == 0, result.stderr
        runs[name] = run_dir(save_dir)
    return runs


def logged_val_losses(run: Path) -> list[str]:
    """The `val_loss` of each epoch line in a run's info.log."""
    log = run.parents[2] / "log" / run.parent.name / run.name / "info.log"
    return re.findall(r" epoch \d+/\d+ .* val_loss (\S+)", log.read_text())


@pytest.mark.slow
def test_ema_changes_validation_not_training(runs: dict[str, Path]) -> None:
    """The run with EMA trains bit for bit as the run without, validates other weights, and
    keeps each hook's average in every checkpoint under its own key."""
    plain, ema = (load(runs[name] / "checkpoint-epoch2.pth") for name in ("plain", "ema"))
    for key in ("state_dict", "optimizer", "lr_scheduler", "rng"):
        assert_same_state(ema[key], plain[key], key)
    logged = {name: logged_val_losses(runs[name]) for name in ("plain", "ema")}
    assert len(logged["ema"]) == 2 and all(a != b for a, b in zip(*logged.values(), strict=True))
    assert "hooks" not in plain or plain["hooks"] == {}
    for path in runs["ema"].glob("*.pth"):
        assert set(load(path)["hooks"]) == {AVERAGED, PASSIVE}, path.name
    averaged, passive = ema["hooks"][AVERAGED], ema["hooks"][PASSIVE]
    assert averaged["updates"] == passive["updates"] == 6
    assert not weights_equal(averaged["weights"], ema["state_dict"])
    assert not weights_equal(averaged["weights"], passive["weights"])
    assert read_json(runs["ema"] / "config.json")["trainer"]["hooks"][1]["args"]["warmup"] is True


@pytest.mark.slow
def test_resume_mid_epoch_restores_every_average_exactly(runs: dict[str, Path], tmp_path) -> None:
    shutil.copytree(runs["ema"].parents[2], tmp_path / "saved")  # the log directory too
    copy = run_dir(tmp_path / "saved")
    (copy / "checkpoint-epoch2.pth").unlink()
    step = load(copy / "checkpoint-step4.pth")
    assert (step["epoch"], step["batches_done"], step["hooks"][AVERAGED]["updates"]) == (1, 1, 4)
    result = run_script("train.py", "-r", str(copy / "checkpoint-step4.pth"))
    assert result.returncode == 0, result.stderr
    resumed = load(copy / "checkpoint-epoch2.pth")
    uninterrupted = load(runs["ema"] / "checkpoint-epoch2.pth")
    assert_same_run(resumed, uninterrupted)  # weights, optimizer, ... and both hooks' states
    assert resumed["hooks"][PASSIVE]["updates"] == 6


def test_a_resume_with_other_hook_arguments_says_the_hook_starts_afresh(runs, tmp_path) -> None:
    """A hook's state belongs to its arguments (its `state_key`): an EMA resumed with another
    decay does not take the saved average, and the warning says that it starts again."""
    shutil.copytree(runs["ema"].parents[2], tmp_path / "saved")
    copy = run_dir(tmp_path / "saved")
    result = run_script("train.py", "-r", str(copy / "checkpoint-step4.pth"),
                        "-o", "trainer.hooks[0].args.decay=0.8")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (
        f"the checkpoint holds the state of hook {AVERAGED}; this run's EMA(model=model, "
        "decay=0.8, warmup=False), with other arguments, starts afresh"
    ) in result.stdout
    assert "which this run lacks" not in result.stdout
    resumed = load(copy / "checkpoint-epoch2.pth")["hooks"]
    assert resumed["EMA(model=model, decay=0.8, warmup=False)"]["updates"] == 6 - 4
    assert resumed[PASSIVE]["updates"] == 6  # the other one went on from its state


def evaluate_by_hand(weights: dict[str, torch.Tensor], config: dict) -> float:
    """The mean test-split NLL of a plain LeNet holding `weights`, without the trainer."""
    model = LeNet(**config["arch"]["args"])
    model.load_state_dict(weights)
    model.eval()
    loader = build_data_loader(config, torch.device("cpu"), training=False, shuffle=False,
                               validation_split=0.0)  # fmt: skip
    total, count = 0.0, 0
    with torch.no_grad():
        for images, targets in loader:  # (B, 1, 28, 28), (B,)
            total += F.nll_loss(model(images), targets, reduction="sum").item()
            count += len(targets)
    return total / count


def test_test_py_evaluates_the_averaged_weights(runs: dict[str, Path], tmp_path: Path) -> None:
    """test.py on `model_best.pth` reports the test loss of the EMA weights as evaluated by
    hand, not that of the training weights the checkpoint also holds."""
    shutil.copy(runs["ema"] / "model_best.pth", tmp_path)  # its test metrics go beside it
    result = run_script("test.py", "-r", str(tmp_path / "model_best.pth"))
    assert result.returncode == 0, result.stderr
    results = read_json(tmp_path / "model_best.test_metrics.json")
    loss, best = results["loss"], load(tmp_path / "model_best.pth")
    assert results["weights"] == AVERAGED  # it says whose weights were evaluated
    averaged = evaluate_by_hand(best["hooks"][AVERAGED]["weights"], best["config"])
    assert loss == pytest.approx(averaged, rel=1e-5)
    assert abs(loss - evaluate_by_hand(best["state_dict"], best["config"])) > 1e-3
