"""The Weights & Biases logger, offline: what it logs, the W&B run a resumed run continues,
its config mistakes, and the hint when the package is missing."""

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, load, make_trainer, toy_config
from torch import nn

import train
from base import BaseTrainer, Hook, TensorDataLoader
from trainer import Trainer
from trainer.hooks.wandb_logger import WandbLogger
from utils.cli import run_main
from utils.errors import TrainingFailed, UserError
from utils.run.dirs import RunDirs, create_run_dirs

STEPS_PER_EPOCH, LOG_STEP = 7, 3
BLOCK = 32768  # bytes per block of W&B's record log (LevelDB's log format)


@pytest.fixture
def wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """W&B offline, with its settings, cache and staging in this test's tmp_path (never ~/),
    and its service process shut down afterwards."""
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for variable in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / variable.lower()))
    yield wandb
    wandb.teardown()


def toy_trainer(**options) -> Trainer:
    """A linear model on 7 unshuffled batches of 4, monitored on its training loss."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(4 * STEPS_PER_EPOCH, 5, generator=generator)
    target = torch.randint(3, (4 * STEPS_PER_EPOCH,), generator=generator)
    loader = TensorDataLoader((features, target), 4, shuffle=False)
    model = nn.Linear(5, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    config = toy_config(**{"epochs": 2, "log_step": LOG_STEP, "monitor": "min loss", **options})
    trainer = make_trainer(model, F.cross_entropy, optimizer, config, loader)
    trainer.hooks.append(WandbLogger(project="toys", mode="offline"))
    return trainer


def read_records(path: Path) -> list:
    """The records of an offline run's `.wandb` file: a 7-byte header (`:W&B`, magic,
    version), then 32 KiB blocks of chunks (CRC, length, type: 1 full, 2 first, 3 middle,
    4 last) that make up serialized `Record` protobufs."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, offset = [], b"", 7
    while offset + 7 <= len(data):
        if BLOCK - offset % BLOCK < 7:  # a block's tail too short for a chunk is padding
            offset += BLOCK - offset % BLOCK
            continue
        length, kind = int.from_bytes(data[offset + 4 : offset + 6], "little"), data[offset + 6]
        pending += data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):
            record = Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def item_name(item) -> str:
    return item.key or "/".join(item.nested_key)


def offline_runs(run: RunDirs) -> list[dict]:
    """Each offline W&B run under the run's log directory, oldest first: its id, project,
    name, config, history rows by step, summary and exit code."""
    import wandb

    wandb.teardown()  # W&B's service writes on after `finish` returns: wait until it is done
    found = []
    for directory in sorted((run.log / "wandb").glob("offline-run-*")):
        (log,) = directory.glob("*.wandb")
        offline = {"history": {}, "summary": {}, "exit_code": None}
        for record in read_records(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                offline.update(id=record.run.run_id, project=record.run.project,
                               name=record.run.display_name)  # fmt: skip
                config = {item_name(i): json.loads(i.value_json) for i in record.run.config.update}
                offline["config"] = {k: v for k, v in config.items() if k != "_wandb"}
            elif kind == "history":
                row = {item_name(i): json.loads(i.value_json) for i in record.history.item}
                offline["history"].setdefault(row["_step"], {}).update(row)
            elif kind == "summary":
                for item in record.summary.update:
                    offline["summary"][item_name(item)] = json.loads(item.value_json)
            elif kind == "exit":
                offline["exit_code"] = record.exit.exit_code
        found.append(offline)
    return found


def test_an_offline_run_holds_the_config_scalars_and_best_value(wandb, tmp_path) -> None:
    trainer = toy_trainer()
    run = create_run_dirs(tmp_path / "saved", "toy", "0101_120000")
    trainer.train(run)
    (offline,) = offline_runs(run)
    assert (offline["id"], offline["project"], offline["name"]) == ("toy-0101_120000", "toys",
                                                                    "0101_120000")  # fmt: skip
    assert offline["config"] == trainer.config
    history = offline["history"]
    train_steps = [step for step, row in history.items() if "train/loss" in row]
    assert train_steps == [3, 6, 7, 10, 13, 14]  # the windows TensorBoard gets
    assert {"train/lr", "train/grad_norm"} <= history[3].keys()
    last = history[14]
    assert last["epoch"] == 2 and last["epoch/lr"] == 0.1
    assert last["epoch/loss"] == pytest.approx(trainer.epoch_log["loss"])
    assert offline["summary"]["best_loss"] == pytest.approx(trainer.monitor.best)
    assert offline["exit_code"] == 0


def test_a_resumed_run_logs_into_the_same_wandb_run(wandb, tmp_path: Path) -> None:
    run = create_run_dirs(tmp_path / "saved", "toy", "run")
    toy_trainer(save_every_steps=5).train(run)
    # W&B names an offline run's directory by its start time in seconds: a resumed run that
    # starts in the same second (a toy one can) would share it. Set it aside, first by name.
    (attempt,) = (run.log / "wandb").glob("offline-run-*")
    attempt.rename(attempt.with_name(f"offline-run-0-{attempt.name}"))
    checkpoint = load(run.models / "checkpoint-step5.pth")
    assert checkpoint["hooks"]["WandbLogger"] == {"run_id": "toy-run"}
    resumed = toy_trainer(epochs=3)
    resumed.load_state_dict(checkpoint)
    resumed.train(run)
    first, second = offline_runs(run)
    assert first["id"] == second["id"] == "toy-run"
    assert min(second["history"]) == 6 and max(second["history"]) == 21


class FailAfterFirstEpoch(Hook):
    def after_epoch(self, trainer: BaseTrainer) -> None:
        trainer.request_stop(TrainingFailed("non-finite loss"))


def test_a_failed_run_finishes_its_wandb_run_as_failed(wandb, tmp_path: Path) -> None:
    trainer = toy_trainer()
    trainer.hooks.insert(0, FailAfterFirstEpoch())
    run = create_run_dirs(tmp_path / "saved", "toy", "run")
    with pytest.raises(TrainingFailed):
        trainer.train(run)
    (offline,) = offline_runs(run)
    assert offline["exit_code"] == 1 and max(offline["history"]) == STEPS_PER_EPOCH


def run_train(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda _: train.main(argv))
    return exit_info.value.code, capsys.readouterr().err


def wandb_hook(args: str) -> str:
    return f"trainer.hooks=[{{type: WandbLogger, args: {args}}}]"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            [wandb_hook("{projct: toys}")],
            "trainer.hooks[0].args.projct: WandbLogger takes no argument 'projct'; "
            "did you mean 'project'?",
        ),
        (
            [wandb_hook("{mode: cloud}")],
            "trainer.hooks[0].args.mode: 'cloud' is not valid for WandbLogger: input should be "
            "'online', 'offline' or 'disabled'",
        ),
        # What W&B's own checks refuse only in `wandb.init`, after the run directory exists.
        (
            [wandb_hook("{project: 5}")],
            "trainer.hooks[0].args.project: 5 is not valid for WandbLogger",
        ),
        ([wandb_hook("{tags: [1, 2]}")], "trainer.hooks[0].args.tags[0]: input should be a valid"),
        (
            [wandb_hook("{tags: [" + "t" * 70 + "]}")],
            "trainer.hooks[0].args.tags[0]: string should have at most 64 characters",
        ),
        ([wandb_hook("{notes: {}}")], "trainer.hooks[0].args.notes: {} is not valid for"),
    ],
)
def test_wandb_config_mistakes_are_one_line_errors(wandb, tmp_path, capsys, overrides, message):
    save_dir = tmp_path / "saved"
    argv = ["-c", str(ROOT / "config" / "config.json"), "-o", f"trainer.save_dir={save_dir}"]
    code, stderr = run_train([*argv, *(a for o in overrides for a in ("-o", o))], capsys)
    assert (code, len(stderr.strip().splitlines())) == (2, 1), stderr
    assert message in stderr
    assert not save_dir.exists()


def test_online_without_credentials_is_refused_before_the_run_directory(
    wandb, tmp_path, capsys, monkeypatch
) -> None:
    """W&B would fail only when it starts, once the run directory exists: it is asked first."""
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no.netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    save_dir = tmp_path / "saved"
    argv = ["-c", str(ROOT / "config" / "config.json"), "-o", f"trainer.save_dir={save_dir}"]
    code, stderr = run_train([*argv, "-o", wandb_hook("{project: toys}")], capsys)
    assert (code, len(stderr.strip().splitlines())) == (2, 1), stderr
    assert (
        "error: trainer.hooks[0].args.mode: W&B is online here but not logged in; run `wandb "
        "login`, or set the mode to 'offline'"
    ) in stderr
    assert not save_dir.exists()


def test_a_missing_wandb_package_is_a_one_line_install_hint(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    with pytest.raises(UserError, match=r"needs the wandb package"):
        WandbLogger()
    save_dir = tmp_path / "saved"
    argv = ["-c", str(ROOT / "config" / "config.json"), "-o", f"trainer.save_dir={save_dir}"]
    code, stderr = run_train([*argv, "-o", wandb_hook("{mode: offline}")], capsys)
    assert code == 2
    hint = (
        'error: trainer.hooks[0]: WandbLogger needs the wandb package: pip install -e ".[wandb]"\n'
    )
    assert stderr == hint
    assert not save_dir.exists()


def test_evaluating_a_wandb_run_needs_no_wandb(shrunk_run, tmp_path, capsys, monkeypatch) -> None:
    """test.py builds no logger, so a run that logged to W&B is evaluated where W&B is not
    installed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("test_script", ROOT / "test.py")
    test_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_script)
    models = shrunk_run.copy_to(tmp_path).models
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        run_main(
            lambda _: test_script.main(["-r", str(models), "-o", wandb_hook("{project: toys}")])
        )
    assert exit_info.value.code == 0, capsys.readouterr().err
    assert (models / "model_best.test_metrics.json").is_file()


def test_evaluating_warns_of_a_hook_state_only_for_a_hook_that_would_evaluate(
    shrunk_run, tmp_path, capsys, monkeypatch
) -> None:
    """test.py leaves the W&B logger out on purpose: its saved state is no reason for a
    warning (every evaluation of a W&B run gave one). A state of a hook that would take
    part (an EMA the evaluation lacks: its weights are not the ones evaluated) still is."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("test_script", ROOT / "test.py")
    test_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_script)
    models = shrunk_run.copy_to(tmp_path).models
    checkpoint = load(models / "model_best.pth")
    checkpoint["hooks"].update({"WandbLogger": {"run_id": "abc"}, "EMA(model=model)": {}})
    torch.save(checkpoint, models / "model_best.pth")
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    argv = ["-r", str(models / "model_best.pth"), "-o", wandb_hook("{project: toys}")]
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda _: test_script.main(argv))
    output = "".join(capsys.readouterr())
    assert exit_info.value.code == 0, output
    assert "state of hook EMA(model=model), which this run lacks" in output
    assert "WandbLogger" not in output
