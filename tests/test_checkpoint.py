"""utils/checkpoint/files.py, utils/seed.py and utils/run/dirs.py: what a run writes and reads
back."""

import os
import random
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from utils.checkpoint.files import CHECKPOINT_KEYS, load_checkpoint, save_checkpoint, write_json
from utils.errors import UserError
from utils.run.dirs import RunDirs, create_run_dirs, run_dirs_at
from utils.seed import get_rng_state, seed_everything, set_rng_state


def make_state() -> dict:
    """A checkpoint like the trainer's: every key, real optimizer and scheduler states."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()  # so the optimizer state holds tensors
    scheduler.step()
    return {
        "arch": "Linear",
        "epoch": 3,
        "step": 30,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "scaler": None,
        "monitor_best": 0.25,
        "not_improved_count": 1,
        "config": {"name": "Toy", "trainer": {"epochs": 3, "monitor": "min val_loss"}},
        "rng": get_rng_state(),
        "batches_done": 0,
        "progress": {
            "train_metrics": {
                "device_totals": {},
                "device_counts": {},
                "totals": {"loss": 2.5},
                "counts": {"loss": 4.0},
            },
            "passes": 0,
            "pass_batches": 0,
        },
    }


def assert_same(first, second, where="state"):
    """Recursive equality that compares tensors by value."""
    if isinstance(first, torch.Tensor):
        assert isinstance(second, torch.Tensor), where
        assert first.dtype == second.dtype and torch.equal(first, second), where
    elif isinstance(first, dict):
        assert isinstance(second, dict) and first.keys() == second.keys(), where
        for key in first:
            assert_same(first[key], second[key], f"{where}[{key!r}]")
    elif isinstance(first, list | tuple):
        assert type(first) is type(second) and len(first) == len(second), where
        for index, (a, b) in enumerate(zip(first, second, strict=True)):
            assert_same(a, b, f"{where}[{index}]")
    else:
        assert first == second, where


def test_make_state_covers_every_checkpoint_key():
    assert set(make_state()) == set(CHECKPOINT_KEYS)


# ---------------------------------------------------------------- save and load


def test_round_trip(tmp_path):
    state = make_state()
    path = tmp_path / "checkpoint-epoch3.pth"
    save_checkpoint(state, path)
    assert_same(state, load_checkpoint(path))
    assert_same(state, load_checkpoint(str(path)))


def test_saved_file_loads_with_weights_only(tmp_path):
    state = make_state()
    path = tmp_path / "c.pth"
    save_checkpoint(state, path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert_same(state, loaded)


def test_save_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "c.pth"
    save_checkpoint(make_state(), path)
    save_checkpoint(make_state(), path)  # overwrite too
    assert [p.name for p in tmp_path.iterdir()] == ["c.pth"]


def test_save_overwrites(tmp_path):
    path = tmp_path / "c.pth"
    first = make_state()
    save_checkpoint(first, path)
    second = {**first, "epoch": 4}
    save_checkpoint(second, path)
    assert load_checkpoint(path)["epoch"] == 4


def test_failed_save_keeps_previous_file_and_no_temp(tmp_path):
    path = tmp_path / "model_best.pth"
    state = make_state()
    save_checkpoint(state, path)
    before = path.read_bytes()

    broken = {**state, "config": {"callback": lambda: 0}}  # torch.save cannot pickle a lambda
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises, it must propagate
        save_checkpoint(broken, path)

    assert path.read_bytes() == before
    assert_same(state, load_checkpoint(path))
    assert [p.name for p in tmp_path.iterdir()] == ["model_best.pth"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_saved_files_get_the_users_umask(tmp_path, umask):
    """Not mkstemp's owner-only 0600: colleagues on a shared cluster read what the umask allows."""
    previous = os.umask(umask)
    try:
        save_checkpoint(make_state(), tmp_path / "c.pth")
        write_json(tmp_path / "config.json", {"a": 1})
    finally:
        os.umask(previous)
    for name in ("c.pth", "config.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask


def test_failed_first_save_creates_nothing(tmp_path):
    path = tmp_path / "c.pth"
    with pytest.raises(Exception):  # noqa: B017
        save_checkpoint({"x": lambda: 0}, path)
    assert list(tmp_path.iterdir()) == []


def assert_refused(path: Path) -> str:
    with pytest.raises(UserError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert str(path) in message
    assert "weights_only" not in message  # never torch's advice to load unsafely
    return message


def test_load_missing_file(tmp_path):
    assert_refused(tmp_path / "absent.pth")


def test_load_directory(tmp_path):
    assert_refused(tmp_path)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a checkpoint\n",
        '{"name": "Mnist_LeNet"}\n',  # a config passed by mistake
        "name: Mnist_LeNet\n",
        "hello world\n",
        "abc\n",
        "accuracy: 0.9\n",
    ],
)
def test_load_text_file(tmp_path, text):
    path = tmp_path / "notes.pth"
    path.write_text(text)
    assert "notes.pth: not a checkpoint (" in assert_refused(path)


@pytest.mark.parametrize("content", [b"\x00", b"x", b"\x80", b"PK"])
def test_load_a_one_or_two_byte_file(tmp_path, content):
    path = tmp_path / "tiny.pth"
    path.write_bytes(content)
    assert "tiny.pth: not a checkpoint (" in assert_refused(path)


@pytest.mark.parametrize("keep", [0.5, 0.9, 100, 10, -10])
def test_load_truncated_checkpoint(tmp_path, keep):
    path = tmp_path / "c.pth"
    save_checkpoint(make_state(), path)
    data = path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep
    path.write_bytes(data[:cut])
    assert_refused(path)


@pytest.mark.parametrize(
    "content",
    [
        [1, 2, 3],
        torch.zeros(3),
        {"state_dict": {"w": torch.zeros(2)}},  # a bare weights file
        {key: None for key in CHECKPOINT_KEYS if key != "rng"},
    ],
    ids=["list", "tensor", "weights-only-dict", "missing-rng"],
)
def test_load_torch_file_that_is_not_our_checkpoint(tmp_path, content):
    path = tmp_path / "other.pth"
    torch.save(content, path)
    message = assert_refused(path)
    assert "rng" in message  # names a missing key


class Payload:
    """Unpickling this runs `_write_marker(path)`: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (_write_marker, (str(self.marker),))


def _write_marker(path: str) -> str:
    Path(path).write_text("payload ran")
    return path


def test_load_refuses_pickled_objects_without_running_them(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pth"
    state = make_state()
    state["config"] = {"name": Payload(marker)}
    torch.save(state, path)

    assert "Python objects other than tensors" in assert_refused(path)
    assert not marker.exists()

    # The payload is real: an unsafe load would have run it.
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()


# ---------------------------------------------------------------- utils/seed.py


def draws() -> tuple:
    return (
        random.random(),
        random.gauss(0.0, 1.0),
        np.random.rand(),
        np.random.randn(),
        torch.rand(3),
        torch.randn(2),
    )


def assert_draws_equal(first, second):
    for a, b in zip(first, second, strict=True):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)
        else:
            assert a == b


def test_rng_state_survives_weights_only_save_and_restores_every_generator(tmp_path):
    seed_everything(123)
    # Leave a cached Gaussian in Python's and NumPy's generators: part of their state too.
    random.gauss(0.0, 1.0)
    np.random.randn()
    path = tmp_path / "rng.pth"
    torch.save(get_rng_state(), path)
    expected = draws()

    seed_everything(999)  # move every generator on
    draws()
    set_rng_state(torch.load(path, map_location="cpu", weights_only=True))
    assert_draws_equal(draws(), expected)


def test_rng_state_in_checkpoint_round_trip(tmp_path):
    seed_everything(5)
    state = make_state()
    state["rng"] = get_rng_state()
    expected = draws()
    path = tmp_path / "c.pth"
    save_checkpoint(state, path)
    set_rng_state(load_checkpoint(path)["rng"])
    assert_draws_equal(draws(), expected)


def test_seed_everything_is_repeatable():
    seed_everything(42)
    first = draws()
    seed_everything(42)
    assert_draws_equal(draws(), first)
    seed_everything(43)
    assert draws()[0] != first[0]


# ---------------------------------------------------------------- utils/run/dirs.py


def test_create_run_dirs_layout(tmp_path):
    dirs = create_run_dirs(tmp_path / "saved", "Exp", "run1")
    assert dirs.models == tmp_path / "saved" / "models" / "Exp" / "run1"
    assert dirs.log == tmp_path / "saved" / "log" / "Exp" / "run1"
    assert dirs.models.is_dir() and dirs.log.is_dir()
    assert dirs.run_id == "run1"


def test_a_given_run_id_is_that_directory_or_an_error(tmp_path):
    first = create_run_dirs(tmp_path, "Exp", "run1")
    (first.models / "train.lock").touch()  # a start killed before it wrote its config.json
    assert create_run_dirs(tmp_path, "Exp", "run1") == first  # taken up again, no run1_1
    (first.models / "config.json").write_text("{}")
    with pytest.raises(UserError, match=r"--run-id: 'run1' is a run that exists .* -r "):
        create_run_dirs(tmp_path, "Exp", "run1")
    assert sorted(p.name for p in (tmp_path / "models" / "Exp").iterdir()) == ["run1"]


def test_default_run_ids_in_the_same_second_do_not_collide(tmp_path):
    first = create_run_dirs(tmp_path, "Exp")
    second = create_run_dirs(tmp_path, "Exp")
    assert first.models != second.models and first.log != second.log
    assert first.models.is_dir() and second.models.is_dir()


def test_a_given_run_id_does_not_share_a_leftover_log(tmp_path):
    log = tmp_path / "log" / "Exp" / "run1"
    log.mkdir(parents=True)
    (log / "info.log").write_text("an earlier run's\n")
    with pytest.raises(UserError, match="--run-id: 'run1' is a run that exists"):
        create_run_dirs(tmp_path, "Exp", "run1")


def test_run_dirs_at(tmp_path):
    dirs = create_run_dirs(tmp_path / "saved", "Exp", "run1")
    found = run_dirs_at(dirs.models, "Exp")
    root = tmp_path.resolve() / "saved"
    assert found == RunDirs(root / "models" / "Exp" / "run1", root / "log" / "Exp" / "run1")


def test_run_dirs_at_a_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = run_dirs_at("saved/models/Exp/0101_120000_1", "Exp")
    assert found.log == Path("saved/log/Exp/0101_120000_1")
    assert found.run_id == "0101_120000_1"


@pytest.mark.parametrize("save_dir", ["saved", "./saved/../saved", "ABSOLUTE"])
def test_fresh_and_resumed_runs_show_paths_in_one_style(tmp_path, monkeypatch, save_dir):
    """Inside the working directory: relative, however the path was written; outside: absolute."""
    monkeypatch.chdir(tmp_path)
    save_dir = tmp_path / "saved" if save_dir == "ABSOLUTE" else save_dir
    fresh = create_run_dirs(save_dir, "Exp", "run1")
    assert fresh == RunDirs(Path("saved/models/Exp/run1"), Path("saved/log/Exp/run1"))
    for models in ("saved/models/Exp/run1", tmp_path / "saved/models/Exp/run1"):
        assert run_dirs_at(models, "Exp") == fresh
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    outside = run_dirs_at("../saved/models/Exp/run1", "Exp")
    assert outside.models == tmp_path.resolve() / fresh.models
