"""Property test: any broken version of a shipped config is refused before anything runs,
with one line that names a key, never a traceback and never a run directory."""

import copy
import json
import re
from pathlib import Path

import pytest
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import train
from utils.config.argument_types import fits
from utils.config.check import load_config_file
from utils.config.keys import MAX_WORKERS, TOP_LEVEL_KEYS, TRAINER_KEYS, Key
from utils.errors import UserError

SHIPPED = [  # (not the configs that download their data: no network in tests)
    path
    for path in sorted((ROOT / "config").glob("*.json")) + sorted((ROOT / "config").glob("*.yaml"))
    if not load_config_file(path)["data_loader"]["args"].get("download")
]
SAMPLE_VALUES = ["text", 3, -1, 1.5, True, [1, 2], {"a": 1}, None]
NAMED_NODES = ["arch", "data_loader", "optimizer", "lr_scheduler"]


def wrong_type(section: dict[str, Key]) -> st.SearchStrategy:
    """A key and a value its hint refuses (not save_dir: the test sets that)."""
    return st.sampled_from(
        [(key, value) for key, spec in section.items() for value in SAMPLE_VALUES
         if not fits(spec.hint, value) and key != "save_dir"]
    )  # fmt: skip


identifiers = st.from_regex(r"[a-z][a-z0-9_]{2,12}", fullmatch=True)


@st.composite
def broken_configs(draw) -> tuple[dict, str]:
    """A shipped config with one mutation that makes it invalid, and what was done."""
    config = copy.deepcopy(load_config_file(draw(st.sampled_from(SHIPPED))))
    kind = draw(st.sampled_from(
        ["unknown key", "missing key", "wrong type", "bad name", "bad number", "bad argument",
         "ill-typed argument"]
    ))  # fmt: skip
    if kind == "unknown key":
        section = draw(st.sampled_from(["top", "trainer"]))
        table = TOP_LEVEL_KEYS if section == "top" else TRAINER_KEYS
        name = draw(identifiers.filter(lambda n: n not in table))
        (config if section == "top" else config["trainer"])[name] = draw(
            st.sampled_from(SAMPLE_VALUES)
        )
    elif kind == "missing key":
        # (`loss` only where it is set: a trainer that takes none needs none)
        required = ["name", "arch", "data_loader", "optimizer", "trainer", "trainer.epochs"]
        key = draw(st.sampled_from(required + (["loss"] if config.get("loss") else [])))
        if key == "trainer.epochs":
            del config["trainer"]["epochs"]
        else:
            del config[key]
    elif kind == "wrong type":
        section = draw(st.sampled_from(["top", "trainer"]))
        key, value = draw(wrong_type(TOP_LEVEL_KEYS if section == "top" else TRAINER_KEYS))
        (config if section == "top" else config["trainer"])[key] = value
    elif kind == "bad name":
        node = draw(st.sampled_from([n for n in NAMED_NODES if config.get(n)]))
        config[node]["type"] = draw(st.one_of(
            identifiers.map(lambda n: n + "Zq9"), st.sampled_from(
                ["os.system", "__import__", "_private", "eval", "torch.load", "print"])
        ))  # fmt: skip
    elif kind == "bad number":
        key, value = draw(st.one_of(
            st.tuples(st.just("trainer.epochs"), st.integers(-5, 0)),
            st.tuples(st.just("data_loader.args.batch_size"), st.integers(-5, 0)),
            st.tuples(st.just("data_loader.args.validation_split"),
                      st.one_of(st.floats(1.0, 5.0), st.floats(-5.0, -0.01))),
            st.tuples(st.just("trainer.save_period"), st.integers(-5, 0)),
            st.tuples(st.just("trainer.monitor"), st.sampled_from(
                ["max nothing_logged", "lowest val_loss", "min", "min val_loss extra"])),
            st.tuples(st.just("seed"), st.integers(2**32, 2**80)),
            st.tuples(st.just("data_loader.args.batch_size"), st.integers(2**31, 2**80)),
            st.tuples(st.just("data_loader.args.num_workers"),
                      st.integers(MAX_WORKERS + 1, 2**80)),
            st.tuples(st.just("data_loader.args.shuffle"), st.sampled_from(
                ["no", "false", 0, 1, None])),
            st.tuples(st.just("trainer.epochs"), st.integers(2**63, 2**200)),
            st.tuples(st.just("name"), st.sampled_from([".", "..", "a/b", "é" * 128, "a\x00b"])),
        ))  # fmt: skip
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[last] = value
    elif kind == "ill-typed argument":  # refused by the constructor's type hints
        node = draw(st.sampled_from([n for n in NAMED_NODES if (config.get(n) or {}).get("args")]))
        key = draw(st.sampled_from(sorted(config[node]["args"])))
        config[node]["args"][key] = {"zq": 1}  # a mapping, where every shipped argument is not
    else:  # a constructor argument the class does not take
        node = draw(st.sampled_from([n for n in NAMED_NODES if config.get(n)]))
        config[node].setdefault("args", {})[draw(identifiers) + "_zq"] = 1
    return config, kind


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=broken_configs())
def test_every_broken_config_exits_2_naming_a_key(tmp_path: Path, case) -> None:
    config, kind = case
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(config))
    save_dir = tmp_path / "saved"
    with pytest.raises(UserError) as error:
        train.main(["-c", str(path), "-d", "cpu", "-o", f"trainer.save_dir={save_dir}"])
    message = str(error.value)
    assert "\n" not in message, message
    # Each reported problem starts with the key path it is about (`-o KEY:` for an override).
    for problem in message.split(" | "):
        assert re.match(r"^(-o )?[A-Za-z_][\w.\[\]]*: ", problem), (kind, message)
    assert not save_dir.exists(), "no run directory for a refused config"
