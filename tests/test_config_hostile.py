"""Config files and values built to hurt: each is refused at once, through the real command
line, with one line that names the file or key (exit 2), and no run directory."""

import contextlib
import json
import os
import re
import resource
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, shrunk
from test_cli_errors import assert_refused, run_in_process

import train
from model.metric import top_k_acc
from utils.config.check import apply_overrides, load_config_file, resolve_config
from utils.config.keys import MAX_WORKERS
from utils.errors import UserError

SHIPPED = json.loads((ROOT / "config" / "config.json").read_text())


@pytest.fixture
def memory_cap():
    """Cap this process's address space at what it has mapped plus 2 GiB while the test runs:
    code that reads or expands without bound then fails with MemoryError, instead of taking
    the machine's memory."""
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("needs /proc/self/status to measure the process")
    mapped = int(re.search(r"VmSize:\s+(\d+) kB", status.read_text())[1]) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = mapped + 2**31 if hard == resource.RLIM_INFINITY else min(mapped + 2**31, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def refused(config: Path | str, tmp_path: Path, capsys, overrides: list[str], *fragments: str):
    """`train.py -c config` (shrunk, into tmp_path/saved) exits 2 with one line naming every
    fragment, within 10 seconds, and creates no directory."""
    argv = ["-c", str(config), "-d", "cpu", *shrunk(tmp_path / "saved")]
    for override in overrides:
        argv += ["-o", override]
    start = time.monotonic()
    assert_refused(train.main, argv, capsys, *fragments)
    assert time.monotonic() - start < 10
    assert not (tmp_path / "saved").exists()


def yaml_config(tmp_path: Path, lines: str, replacing: str = "") -> Path:
    """The shipped config as a YAML file, with `lines` in place of its top-level `replacing`."""
    path = tmp_path / "config.yaml"
    config = {key: value for key, value in SHIPPED.items() if key != replacing}
    path.write_text(yaml.safe_dump(config, sort_keys=False) + lines)
    return path


def json_config(tmp_path: Path, text: str, replacing: str) -> Path:
    """The shipped config as a JSON file, with `text` in place of `replacing` in its text."""
    path = tmp_path / "config.json"
    original = json.dumps(SHIPPED)
    assert replacing in original
    path.write_text(original.replace(replacing, text))
    return path


CONFIG = ROOT / "config" / "config.json"

# ---------------------------------------------------------------- unbounded input


def test_alias_bomb_is_refused_at_once(tmp_path, capsys, memory_cap):
    # "Billion laughs": nine references per level, 9**10 strings once expanded.
    lines = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
    )
    path = yaml_config(tmp_path, lines + "name: *a9\n", replacing="name")
    refused(path, tmp_path, capsys, [], str(path), "more than 100000 values", "aliases")


def test_shared_values_are_counted_where_they_appear(memory_cap):
    # The same bomb built in Python (as a checkpoint's config could hold it).
    value = ["x"] * 9
    for _ in range(9):
        value = [value] * 9
    start = time.monotonic()
    with pytest.raises(UserError, match="more than 100000 values"):
        resolve_config({**SHIPPED, "name": value})
    assert time.monotonic() - start < 10


def test_merge_key_bomb_is_refused_at_once(tmp_path, capsys, memory_cap):
    # Before PyYAML 6.0.2, each merge of the mapping above twice doubles its keys.
    lines = "m0: &m0 {a: 1, b: 2}\n" + "".join(
        f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: 1}}\n" for i in range(1, 40)
    )
    refused(yaml_config(tmp_path, lines), tmp_path, capsys, [])


def _release(fifo: Path) -> None:
    """Let a reader blocked on `fifo` go on (it reads an empty file)."""
    with contextlib.suppress(OSError):  # no reader is waiting
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize("kind", ["endless device", "fifo", "directory"])
def test_a_config_path_that_is_not_a_regular_file_is_refused(tmp_path, capsys, memory_cap, kind):
    path = tmp_path / "config.json"
    if kind == "endless device":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    # Should the read block on the FIFO, the watchdog ends it, and the test fails on the
    # message and the time rather than hanging.
    watchdog = threading.Timer(15, _release, [path])
    watchdog.start()
    try:
        refused(path, tmp_path, capsys, [], str(path), "not a regular file")
    finally:
        watchdog.cancel()


def test_an_oversized_file_is_refused_before_it_is_parsed(tmp_path, capsys):
    path = json_config(tmp_path, " " * (1 << 20) + '"name"', replacing='"name"')
    refused(path, tmp_path, capsys, [], str(path), "larger than 1024 KiB")


def test_a_file_of_too_many_values_is_refused(tmp_path, capsys):
    path = json_config(tmp_path, '"amsgrad": true, "betas": [' + "0, " * 150_000 + "0]",
                       replacing='"amsgrad": true')  # fmt: skip
    refused(path, tmp_path, capsys, [], str(path), "more than 100000 values")


def test_a_recursive_alias_is_refused(tmp_path, capsys):
    lines = "optimizer: {type: Adam, args: {lr: 0.001, betas: &b [0.9, *b]}}\n"
    path = yaml_config(tmp_path, lines, replacing="optimizer")
    refused(path, tmp_path, capsys, [], str(path), "optimizer.args.betas[1]", "holds itself")


def test_a_recursive_override_is_refused(tmp_path, capsys):
    refused(CONFIG, tmp_path, capsys, ["optimizer.args.betas=&b [0.9, *b]"],
            "optimizer.args.betas[1]", "holds itself")  # fmt: skip


@pytest.mark.parametrize(
    ("suffix", "depth", "fragment"),
    [
        (".json", 100_000, "nested too deeply"),  # beyond the parser's recursion
        (".json", 500, "nested more than 32 levels"),  # parsed, but copying it recursed too deep
        (".yaml", 500, "nested too deeply"),
    ],
)
def test_deep_nesting_is_refused(tmp_path, capsys, suffix, depth, fragment):
    nested = "[" * depth + "]" * depth
    path = json_config(tmp_path, f'"amsgrad": true, "betas": {nested}', replacing='"amsgrad": true')
    path = path.rename(path.with_suffix(suffix))
    refused(path, tmp_path, capsys, [], str(path), fragment)


@pytest.mark.parametrize("content", [b"\xff\xfe\x00\x01binary", '{"name": "é"}'.encode("latin-1")])
def test_a_file_that_is_not_utf8_is_refused(tmp_path, capsys, content):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    refused(path, tmp_path, capsys, [], str(path), "not UTF-8 text")


def test_a_byte_order_mark_is_ignored(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(SHIPPED).encode())
    assert load_config_file(path) == SHIPPED


# ---------------------------------------------------------------- values JSON cannot hold


@pytest.mark.parametrize(
    ("value", "reported"),
    [
        ("!!timestamp 2024-01-01", "optimizer.args.betas[1]"),
        ("!!binary aGVsbG8=", "optimizer.args.betas[1]"),
        ("!!set {a, b}", "optimizer.args.betas[1]"),
        ("!!omap [{a: 1}]", "optimizer.args.betas[1][0]"),  # a list of tuples
    ],
)
def test_yaml_values_json_has_no_type_for_are_refused(tmp_path, capsys, value, reported):
    lines = f"optimizer: {{type: Adam, args: {{lr: 0.001, betas: [0.9, {value}]}}}}\n"
    path = yaml_config(tmp_path, lines, replacing="optimizer")
    refused(path, tmp_path, capsys, [], reported, "expected a JSON value")


def test_a_key_that_is_not_a_string_is_refused(tmp_path, capsys):
    lines = "optimizer: {type: Adam, args: {lr: 0.001, 1: 2}}\n"
    path = yaml_config(tmp_path, lines, replacing="optimizer")
    refused(path, tmp_path, capsys, [], "optimizer.args.1", "expected a string key")


def test_an_integer_beyond_64_bits_is_refused(tmp_path, capsys):
    refused(CONFIG, tmp_path, capsys, ["optimizer.args.lr=1" + "0" * 400],
            "optimizer.args.lr", "2**63")  # fmt: skip


# ---------------------------------------------------------------- YAML 1.2 scalars


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1:30", "1:30"),  # YAML 1.1: 90 (base 60)
        ("1:30.5", "1:30.5"),
        ("1_000", "1_000"),  # YAML 1.1: 1000
        ("0b11", "0b11"),
        ("017", 17),  # YAML 1.1: octal 15
        ("0o17", 15),
        ("0x1F", 31),
        ("+5", 5),
        ("-5", -5),
        ("2024-01-01", "2024-01-01"),  # YAML 1.1: a date
        ("yes", "yes"),
        ("off", "off"),
        ("=", "="),
        ("1e-3", 0.001),
        (".5", 0.5),
        ("1.", 1.0),
        ("true", True),
        ("null", None),
        ("~", None),
    ],
)
def test_files_and_overrides_read_scalars_alike_as_yaml_1_2(tmp_path, text, expected):
    (tmp_path / "c.yaml").write_text(f"value: {text}\n")
    from_file = load_config_file(tmp_path / "c.yaml")["value"]
    from_override = apply_overrides({}, [f"value={text}"])["value"]
    for value in (from_file, from_override):
        assert value == expected and type(value) is type(expected)


def test_a_base_60_epoch_count_is_refused(tmp_path, capsys):
    refused(CONFIG, tmp_path, capsys, ["trainer.epochs=1:30"], "trainer.epochs", "'1:30'")


@pytest.mark.parametrize("flag", ["shuffle", "training", "drop_last", "download", "pin_memory"])
@pytest.mark.parametrize("text", ["no", '"false"', "0"])
def test_loader_flags_must_be_booleans(tmp_path, capsys, flag, text):
    refused(CONFIG, tmp_path, capsys, [f"data_loader.args.{flag}={text}"],
            f"data_loader.args.{flag}", "true or false")  # fmt: skip


def test_pin_memory_may_be_null():
    config = json.loads(json.dumps(SHIPPED))
    config["data_loader"]["args"]["pin_memory"] = None
    assert resolve_config(config)["data_loader"]["args"]["pin_memory"] is None


# ---------------------------------------------------------------- repeated keys


def test_a_key_written_twice_in_json_is_refused(tmp_path, capsys):
    path = json_config(tmp_path, '"seed": 0, "seed": 1', replacing='"seed": 0')
    refused(path, tmp_path, capsys, [], str(path), "'seed'", "twice")


def test_a_key_written_twice_in_yaml_is_refused(tmp_path, capsys):
    path = yaml_config(tmp_path, "seed: 1\n")  # the shipped config has a seed already
    refused(path, tmp_path, capsys, [], str(path), "'seed'", "twice", "line")


def test_a_yaml_merge_may_override_the_keys_it_brings(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "base: &base {lr: 0.1, momentum: 0.9}\nargs: {<<: *base, lr: 0.01}\nagain: {<<: *base}\n"
    )
    loaded = load_config_file(tmp_path / "c.yaml")
    assert loaded["args"] == {"lr": 0.01, "momentum": 0.9}
    assert loaded["again"] == {"lr": 0.1, "momentum": 0.9}


# ---------------------------------------------------------------- names, seeds and sizes


@pytest.mark.parametrize("name", ["..", ".", "a/b", "é" * 128])
def test_a_name_that_is_not_one_directory_is_refused(tmp_path, capsys, name):
    refused(CONFIG, tmp_path, capsys, [f"name={name}"], "name:", "directory name")


def test_a_name_of_255_bytes_is_accepted():
    assert resolve_config({**SHIPPED, "name": "é" * 127 + "x"})["name"] == "é" * 127 + "x"


@pytest.mark.parametrize(
    ("key", "replacing", "text", "fragment"),
    [
        ("trainer.save_dir", '"save_dir": "saved/"', '"save_dir": ""', "such as 'saved/'"),
        ("trainer.save_dir", '"save_dir": "saved/"', '"save_dir": "sa\\u0000ved/"', "NUL"),
        ("name", '"name": "Mnist_LeNet"', '"name": "Mnist\\u0000LeNet"', "NUL"),
        ("data_loader.args.data_dir", '"data_dir": "data/"', '"data_dir": "da\\u0000ta/"', "NUL"),
    ],
)
def test_an_empty_or_nul_path_in_a_file_is_refused(tmp_path, capsys, key, replacing, text,
                                                   fragment):  # fmt: skip
    config = json_config(tmp_path, text, replacing)
    argv = ["-c", str(config), "-d", "cpu", "-o", "trainer.epochs=1", "-o", "trainer.len_epoch=1"]
    if key != "data_loader.args.data_dir":
        argv += ["-o", f"data_loader.args.data_dir={ROOT / 'data'}"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)  # where `save_dir: ""` would write
        assert_refused(train.main, argv, capsys, f"{key}:", fragment)
    assert list(tmp_path.iterdir()) == [config]


@pytest.mark.parametrize("seed", [2**32, 2**64])
def test_a_seed_that_not_every_generator_takes_is_refused(tmp_path, capsys, seed):
    refused(CONFIG, tmp_path, capsys, [f"seed={seed}"], "seed:", f"{seed}")


def test_the_largest_seed_is_accepted():
    assert resolve_config({**SHIPPED, "seed": 2**32 - 1})["seed"] == 2**32 - 1


def test_a_huge_batch_size_is_refused(tmp_path, capsys):
    refused(CONFIG, tmp_path, capsys, [f"data_loader.args.batch_size={10**30}"],
            "data_loader.args.batch_size")  # fmt: skip
    config = json.loads(json.dumps(SHIPPED))
    config["data_loader"]["args"]["batch_size"] = 2**31
    with pytest.raises(UserError, match=r"batch_size: 2147483648 .* 2\*\*31 - 1"):
        resolve_config(config)
    config["data_loader"]["args"]["batch_size"] = 2**31 - 1
    assert resolve_config(config)["data_loader"]["args"]["batch_size"] == 2**31 - 1


def test_a_million_loader_workers_are_refused(tmp_path, capsys):
    refused(CONFIG, tmp_path, capsys, ["data_loader.args.num_workers=1000000"],
            "data_loader.args.num_workers", "1000000")  # fmt: skip


@pytest.mark.parametrize("workers", [-1, True, "2", 1.0, MAX_WORKERS + 1])
def test_loader_workers_outside_the_range_are_refused(workers):
    config = json.loads(json.dumps(SHIPPED))
    config["data_loader"]["args"]["num_workers"] = workers
    with pytest.raises(UserError, match=r"data_loader\.args\.num_workers: .* expected an integer"):
        resolve_config(config)


def test_loader_workers_up_to_the_bound_are_accepted():
    assert max(32, os.cpu_count() or 1) <= MAX_WORKERS
    config = json.loads(json.dumps(SHIPPED))
    for workers in (0, MAX_WORKERS):
        config["data_loader"]["args"]["num_workers"] = workers
        assert resolve_config(config)["data_loader"]["args"]["num_workers"] == workers


# ---------------------------------------------------------------- metric arguments


def test_a_top_k_of_zero_is_refused_before_training(tmp_path, capsys):
    refused(CONFIG, tmp_path, capsys, ["metrics=[accuracy, {type: top_k_acc, args: {k: 0}}]"],
            "metrics[1].args.k", "integer >= 1")  # fmt: skip


@pytest.mark.parametrize("k", [0, -1, "5", 1.5, True, None])
def test_a_bad_top_k_is_refused_when_the_config_is_read(k):
    config = {**SHIPPED, "metrics": [{"type": "top_k_acc", "args": {"k": k}}]}
    with pytest.raises(UserError, match=r"metrics\[0\]\.args\.k: .* expected an integer >= 1"):
        resolve_config(config)


def test_top_k_acc_refuses_a_bad_k_when_called():
    output, target = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]]), torch.tensor([0, 0])
    assert top_k_acc(output, target, k=2).item() == 1.0
    assert top_k_acc(output, target, k=1).item() == 0.5
    for k in (0, -1, "5", True):
        with pytest.raises(ValueError, match=r"k: .* expected an integer >= 1"):
            top_k_acc(output, target, k=k)


# ---------------------------------------------------------------- short messages


@pytest.mark.parametrize(
    "override",
    [
        "name=" + "x" * 5000 + "/",
        "name=[" + ", ".join(["y" * 100] * 500) + "]",
        "k" * 5000 + "=1",
        "arch.type=" + "a" * 5000,  # a name the builder would look up (and show)
        "trainer.epochs=" + "9" * 5000,  # more digits than Python turns into an int: a string
        "arch.args.num_classes=[" + ", ".join(["7"] * 5000) + "]",  # refused by a type hint
        "optimizer.args.betas=[0.9, " + "z" * 5000 + "]",  # an item refused by a type hint
    ],
)
def test_error_messages_stay_short_whatever_the_value(tmp_path, capsys, override):
    argv = ["-c", str(CONFIG), "-o", f"trainer.save_dir={tmp_path / 'saved'}", "-o", override]
    code, stderr = run_in_process(train.main, argv, capsys)
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert len(stderr) < 400, stderr


def test_many_problems_are_counted_not_listed(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**SHIPPED, **{f"unknown{i}": 1 for i in range(1000)}}))
    code, stderr = run_in_process(train.main, ["-c", str(path)], capsys)
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert stderr.count(" | ") == 9 and "(and 990 more)" in stderr
