"""Checkpoints as found on disk: damaged bytes, files a copy or `touch` re-dated, stray files
beside them, and fields that do not hold what the template writes. Each is refused (or, in
`-r RUN_DIR`, passed over) by name, before any of it is used and before anything is written
(the loads of utils/checkpoint/files.py, then utils/checkpoint/fields.py and
utils/checkpoint/saved_states.py)."""

import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import TrainedRun, load
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli_errors import assert_refused, run_in_process, test_script
from torch import nn

import train
from builder import build_trainer
from utils.checkpoint.files import load_checkpoint, newest_checkpoint
from utils.checkpoint.saved_states import load_weights
from utils.config.check import resolve_config
from utils.errors import UserError


def files_under(directory: Path) -> dict[str, bytes | None]:
    """Every entry under `directory`, with a file's bytes (to see that nothing changed)."""
    return {
        str(p.relative_to(directory)): p.read_bytes() if p.is_file() else None
        for p in sorted(directory.rglob("*"))
    }


def flip_bit(path: Path, offset: int) -> str:
    """Flip one bit `offset` bytes into the largest zip member (a tensor's bytes), as bit rot
    would (the archive's CRCs are not updated); returns the member's name."""
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_length = int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_length = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    data[info.header_offset + 30 + name_length + extra_length + offset] ^= 0x04
    path.write_bytes(data)
    return info.filename


# ---------------------------------------------------------------- damaged bytes


@pytest.mark.slow
def test_a_flipped_bit_in_a_tensor_is_damage_named_by_its_member(tmp_path, shrunk_run):
    path = tmp_path / "checkpoint-epoch2.pth"
    shutil.copy(shrunk_run.models / "checkpoint-epoch2.pth", path)
    member = flip_bit(path, 5000)
    torch.load(path, map_location="cpu", weights_only=True)  # torch alone would take it
    with pytest.raises(UserError, match=rf"{path.name}: damaged \(member {member} fails its CRC"):
        load_checkpoint(path)


def test_a_malformed_pickle_is_damage_not_python_objects(tmp_path, shrunk_run):
    """A pickle no pickler writes (its CRC made to match) is damage: torch's weights-only
    error says `UnpicklingError` for it as for a refused object, and only one is an attack."""
    source, path = shrunk_run.models / "checkpoint-epoch1.pth", tmp_path / "garbled.pth"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w") as copy:
        for info in original.infolist():
            data = bytearray(original.read(info))
            if info.filename.endswith("data.pkl"):
                data[100] ^= 0xFF
            copy.writestr(info, bytes(data))
    with pytest.raises(UserError) as error:
        load_checkpoint(path)
    assert "damaged (its pickle is malformed" in str(error.value)
    assert "Python objects" not in str(error.value)


def test_damaged_checkpoints_through_the_scripts(tmp_path, shrunk_run, capsys):
    """`-r FILE` refuses it in one line; `-r RUN_DIR` passes over it with a warning, for the
    one before it (test.py evaluates that one)."""
    run = shrunk_run.copy_to(tmp_path)
    newest = run.models / "checkpoint-epoch2.pth"
    member = flip_bit(newest, 123)
    before = files_under(run.save_dir)
    for main in (train.main, test_script.main):
        assert_refused(main, ["-r", str(newest)], capsys, newest.name, member, "CRC")
    assert files_under(run.save_dir) == before
    (run.models / "model_best.pth").unlink()
    code, stderr = run_in_process(test_script.main, ["-r", str(run.models)], capsys)
    assert code == 0, stderr
    assert f"warning: skipping checkpoint {newest}: damaged (member {member}" in stderr
    assert (run.models / "checkpoint-epoch1.test_metrics.json").is_file()
    assert not (run.models / "checkpoint-epoch2.test_metrics.json").exists()


# ---------------------------------------------------------------- which checkpoint -r RUN_DIR takes


def test_a_run_directory_resumes_its_furthest_checkpoint_whatever_the_file_times(
    tmp_path, shrunk_run, capsys
):
    """A `touch` (or a copy that does not keep times) makes epoch 1 the newest file: the run
    still stands after epoch 2, so a finished run has nothing left to train."""
    run = shrunk_run.copy_to(tmp_path)
    later = (run.models / "checkpoint-epoch2.pth").stat().st_mtime + 3600
    os.utime(run.models / "checkpoint-epoch1.pth", (later, later))
    path, state = newest_checkpoint(run.models)
    assert path.name == "checkpoint-epoch2.pth" and state["epoch"] == 2
    assert_refused(train.main, ["-r", str(run.models)], capsys, "has completed 2")


def test_the_position_decides_step_then_epoch_then_batches(tmp_path, shrunk_run):
    """A step checkpoint saved at an epoch's last step (epoch not yet counted) is behind the
    epoch checkpoint of the same step; file numbers and kinds do not decide."""
    state = load(shrunk_run.models / "checkpoint-epoch1.pth")
    for name, step, epoch, done in [
        ("checkpoint-step9.pth", 6, 1, 3),  # saved after the last step, before the epoch ended
        ("checkpoint-epoch2.pth", 6, 2, 0),
        ("checkpoint-step5.pth", 5, 1, 2),
        ("checkpoint-epoch1.pth", 3, 1, 0),
    ]:
        torch.save({**state, "step": step, "epoch": epoch, "batches_done": done}, tmp_path / name)
        os.utime(tmp_path / name, (2e9 - step, 2e9 - step))  # the furthest, the oldest file
    path, chosen = newest_checkpoint(tmp_path)
    assert path.name == "checkpoint-epoch2.pth"
    assert (chosen["step"], chosen["epoch"]) == (6, 2)


def test_model_best_is_not_a_candidate_for_resume(tmp_path, shrunk_run):
    state = load(shrunk_run.models / "checkpoint-epoch1.pth")
    torch.save(state, tmp_path / "checkpoint-epoch1.pth")
    torch.save({**state, "step": 99, "epoch": 9}, tmp_path / "model_best.pth")
    assert newest_checkpoint(tmp_path)[0].name == "checkpoint-epoch1.pth"


def test_stray_files_are_ignored_each_with_a_warning(tmp_path, shrunk_run, capsys):
    """A dangling link, a backup copy, an odd name and a directory, all named checkpoint-*.pth:
    each named once on stderr and left alone; the run's own checkpoints are used."""
    run = shrunk_run.copy_to(tmp_path)
    further = {**load(run.models / "checkpoint-epoch2.pth"), "step": 60, "epoch": 20}
    strays = {
        "checkpoint-epoch9.pth": "a link to nothing",
        "checkpoint-step60-backup.pth": "its name is not",
        "checkpoint-epoch_old.pth": "its name is not",
        "checkpoint-epoch5.pth": "a directory",
    }
    (run.models / "checkpoint-epoch9.pth").symlink_to(tmp_path / "nowhere.pth")
    torch.save(further, run.models / "checkpoint-step60-backup.pth")  # would be chosen
    torch.save(further, run.models / "checkpoint-epoch_old.pth")
    (run.models / "checkpoint-epoch5.pth").mkdir()
    (run.models / "model_best.pth").unlink()
    before = files_under(run.save_dir)

    path, _ = newest_checkpoint(run.models)
    assert path.name == "checkpoint-epoch2.pth"
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == len(strays)
    for name, why in strays.items():
        (line,) = [w for w in warnings if f"{run.models / name}:" in w]
        assert line.startswith("warning: ignoring") and why in line

    code, stderr = run_in_process(train.main, ["-r", str(run.models)], capsys)
    assert code == 2 and "has completed 2" in stderr.splitlines()[-1]  # (epoch 2 of 2)
    assert sum("warning: ignoring" in line for line in stderr.splitlines()) == len(strays)
    assert files_under(run.save_dir) == before
    code, stderr = run_in_process(test_script.main, ["-r", str(run.models)], capsys)
    assert code == 0, stderr
    assert (run.models / "checkpoint-epoch2.test_metrics.json").is_file()
    assert all(os.path.lexists(run.models / name) for name in strays)


# ---------------------------------------------------------------- malformed fields


def mutated(state: dict, path: tuple, value=None, drop: bool = False) -> dict:
    """A copy of `state` (shared tensors) with the value at `path` replaced, or dropped."""
    if not path:
        return value
    copy = list(state) if isinstance(state, list | tuple) else dict(state)
    head, *rest = path
    if drop and not rest:
        del copy[head]
    else:
        copy[head] = mutated(state[head], tuple(rest), value, drop)
    return type(state)(copy) if isinstance(state, tuple) else copy


@pytest.fixture(scope="module")
def resumable(shrunk_run: TrainedRun, tmp_path_factory) -> tuple[TrainedRun, dict]:
    """A copy of the shared run, and the state of its `checkpoint-epoch1.pth` (an epoch
    left to train: a checkpoint that got through would train and write)."""
    run = shrunk_run.copy_to(tmp_path_factory.mktemp("malformed"))
    state = load(run.models / "checkpoint-epoch1.pth")
    state["config"]["trainer"]["save_dir"] = str(run.save_dir)
    return run, state


def assert_both_refuse(resumable, state: dict, capsys, *fragments: str, train_only=False) -> None:
    """`state` as the run's checkpoint-epoch1.pth: train.py -r (and test.py -r, unless only
    training uses the field) exit 2 with one line naming the file and `fragments`, and nothing
    is written."""
    run, _ = resumable
    path = run.models / "checkpoint-epoch1.pth"
    torch.save(state, path)
    before = files_under(run.save_dir)
    mains = [train.main] if train_only else [train.main, test_script.main]
    for main in mains:
        assert_refused(main, ["-r", str(path)], capsys, f"checkpoint {path}", *fragments)
        assert files_under(run.save_dir) == before


MALFORMED = [  # (where, value or DROP, what the message names, whether only training uses it)
    (("config",), None, "field 'config': None is not valid", False),
    (("config",), 5, "field 'config': 5", False),
    (("config",), ["x"], "field 'config': a list", False),
    (("config", "trainer"), "x", "field 'config.trainer'", False),
    (("config", "trainer", "epochs"), "abc", "field 'config': the config it was trained", False),
    (("optimizer",), {}, "field 'optimizer.state': missing", False),
    (("optimizer", "state", 0, "exp_avg"), torch.zeros(3), "optimizer.state[0].exp_avg", True),
    (("optimizer", "state", 2, "exp_avg_sq"), "DROP", "field 'optimizer.state[", True),
    (("optimizer", "param_groups", 0, "lr"), "0.1", "optimizer.param_groups[0].lr", True),
    (("progress",), None, "field 'progress'", False),
    (("progress", "passes"), "1", "field 'progress.passes'", False),
    (("progress", "train_metrics", "counts"), {}, "progress.train_metrics", False),
    (("rng", "torch"), torch.zeros(3, dtype=torch.uint8), "field 'rng.torch'", False),
    (("rng", "numpy", "pos"), 700, "field 'rng.numpy.pos'", False),
    (("rng", "python"), (3, (1, 2), None), "field 'rng.python'", False),
    (("lr_scheduler",), "x", "field 'lr_scheduler'", False),
    (("lr_scheduler",), None, "field 'lr_scheduler': missing, but this run has a", True),
    (("lr_scheduler", "last_epoch"), "x", "field 'lr_scheduler.last_epoch'", True),
    (("lr_scheduler", "base_lrs"), "DROP", "field 'lr_scheduler.base_lrs': missing", True),
    (("epoch",), "5", "field 'epoch': '5' is not valid; expected an integer >= 0", False),
    (("step",), 10**20, "field 'step': 100000000000000000000", False),
    (("step",), -1, "field 'step': -1", False),
    (("batches_done",), 2.0, "field 'batches_done'", False),
    (("batches_done",), 50, "field 'batches_done': 50 is more than the 3 batches", True),
    (("state_dict",), None, "field 'state_dict'", False),
    (("state_dict", "fc2.bias"), torch.zeros(7), "fc2.bias (7,) (the model's: (10,))", False),
    (("arch",), 5, "field 'arch'", False),
    (("hooks",), [], "field 'hooks'", False),
    (("monitor_best",), "x", "field 'monitor_best'", False),
    (("monitor_best",), float("nan"), "field 'monitor_best'", False),
    (("not_improved_count",), True, "field 'not_improved_count'", False),
    (("scaler",), "x", "field 'scaler'", False),
]


@pytest.mark.parametrize(("where", "value", "fragment", "train_only"), MALFORMED)
def test_a_malformed_field_is_refused_naming_file_and_field(
    resumable, capsys, where, value, fragment, train_only
):
    state = mutated(resumable[1], where, value, drop=value == "DROP")
    assert_both_refuse(resumable, state, capsys, fragment, train_only=train_only)


def test_an_older_config_without_trainer_monitor_resumes(resumable):
    """The embedded config is read as a config file is: a key left out has its default."""
    state = mutated(resumable[1], ("config", "trainer", "monitor"), drop=True)
    config = resolve_config(state["config"])
    trainer = build_trainer(config, torch.device("cpu"))
    trainer.load_state_dict(state)
    assert trainer.monitor.mode == "off" and (trainer.epoch, trainer.step) == (1, 3)


def test_the_weights_mismatch_names_the_keys():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    weights = {f"9.w{i}": torch.zeros(1) for i in range(5)}  # unexpected: 5, shown: 3
    weights["1.weight"] = torch.zeros(2, 5)  # the model's is (2, 3)
    weights["1.bias"] = torch.zeros(2)
    with pytest.raises(UserError) as error:
        load_weights(model, weights)
    message = str(error.value)
    assert "field 'state_dict'" in message
    assert "missing 0.weight, 0.bias;" in message
    assert "unexpected 9.w0, 9.w1, 9.w2 and 2 more;" in message
    assert "shape 1.weight (2, 5) (the model's: (2, 3))" in message
    assert "1.bias" not in message


# ---------------------------------------------------------------- fuzzing


def kind(value) -> str:
    for name, types in [("tensor", torch.Tensor), ("mapping", dict), ("list", list | tuple),
                        ("text", str), ("flag", bool), ("number", int | float)]:  # fmt: skip
        if isinstance(value, types):
            return name
    return "none"


REPLACEMENTS = [None, 7, "x", [1, 2], {"x": 1}, torch.zeros(3, 7)]
RANGED = {("epoch",), ("step",), ("batches_done",), ("not_improved_count",),
          ("progress", "passes"), ("progress", "pass_batches"), ("progress", "world_size"),
          ("rng", "numpy", "pos"), ("rng", "numpy", "has_gauss")}  # fmt: skip


def replacements(path: tuple, value) -> list:
    """Values that cannot stand at `path`: another kind (a flag and a number, or None for a
    flag, can: Python reads them alike), a wrong-shaped tensor, an out-of-range count."""
    if value is None or (path[0] == "config" and path not in (("config",), ("config", "trainer"))):
        return []  # None may stand for anything; the config's values have their own fuzzing
    bad = [r for r in REPLACEMENTS if kind(r) != kind(value)]
    bad = [r for r in bad if {kind(r), kind(value)} != {"flag", "number"}]
    bad = [r for r in bad if not (kind(value) == "flag" and r is None)]
    if isinstance(value, torch.Tensor):
        bad.append(torch.zeros(3, 7))
    if path in RANGED:
        bad += [-1, 10**20]
    return bad


def droppable(path: tuple) -> bool:
    """Keys a checkpoint must hold: not an optional one (`hooks`, the metric tracker's
    `stateful`, `progress.world_size`: checkpoints of older versions lack them), a private
    one (torch versions differ), an optimizer's entry for a parameter (absent before its first
    step) or its hyperparameters (torch fills in defaults), nor the config's (fuzzed
    elsewhere)."""
    return not (
        path[0] in ("config", "hooks")
        or path in (("progress", "train_metrics", "stateful"), ("progress", "world_size"))
        or str(path[-1]).startswith("_")
        or (path[:2] == ("optimizer", "param_groups") and len(path) > 2)
        or (path[:2] == ("optimizer", "state") and len(path) == 3)
    )


def mutations(state: dict, path: tuple = ()) -> list[tuple[tuple, object, bool]]:
    """(path, replacement, whether dropped) for every value of `state`, long sequences and
    tensors taken whole."""
    found = [(path, value, False) for value in replacements(path, state)] if path else []
    if path and droppable(path):
        found.append((path, None, True))
    children = []
    if isinstance(state, dict):
        children = list(state.items())
    elif isinstance(state, list | tuple) and len(state) <= 8:
        children = list(enumerate(state))
    for key, value in children:
        found += mutations(value, (*path, key))
    return found


def used_only_in_training(path: tuple, replacement, dropped: bool) -> bool:
    """Refused only once the optimizer or schedule is built, which test.py never does."""
    if path[0] == "lr_scheduler":
        return len(path) > 1 or replacement is None  # (a run without a schedule saves None)
    if path[:2] == ("optimizer", "param_groups"):
        return len(path) > 3 and path[3] != "params"
    if path[:2] == ("optimizer", "state") and len(path) >= 4:
        return dropped or isinstance(replacement, torch.Tensor)
    return False


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_malformed_field_is_refused_before_anything_is_written(resumable, capsys, data):
    state = resumable[1]
    by_field: dict[str, list] = {}
    for mutation in mutations(state):
        by_field.setdefault(mutation[0][0], []).append(mutation)
    field = data.draw(st.sampled_from(sorted(by_field)), label="field")
    path, replacement, dropped = data.draw(st.sampled_from(by_field[field]), label="mutation")
    broken = mutated(state, path, replacement, drop=dropped)
    train_only = used_only_in_training(path, replacement, dropped)
    assert_both_refuse(resumable, broken, capsys, train_only=train_only)
