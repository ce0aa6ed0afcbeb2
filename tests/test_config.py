"""utils/config/check.py: reading, overriding and validating the run config."""

import copy
import json
import math
from pathlib import Path

import pytest

from utils.config.check import apply_overrides, load_config_file, resolve_config
from utils.config.keys import TRAINER_KEYS, parse_monitor
from utils.errors import UserError

ROOT = Path(__file__).resolve().parent.parent

CONFIG_JSON = """\
{
  "name": "Mnist_LeNet",
  "n_gpu": 1,
  "seed": 0,
  "arch": {"type": "LeNet", "args": {}},
  "data_loader": {"type": "Mnist5kDataLoader",
                  "args": {"data_dir": "data/", "batch_size": 128, "shuffle": true,
                           "validation_split": 0.1, "num_workers": 2}},
  "optimizer": {"type": "Adam", "args": {"lr": 0.001, "weight_decay": 0, "amsgrad": true}},
  "loss": "nll_loss",
  "metrics": ["accuracy", "top_k_acc"],
  "lr_scheduler": {"type": "StepLR", "args": {"step_size": 50, "gamma": 0.1}},
  "trainer": {"epochs": 10, "save_dir": "saved/", "save_period": 1, "verbosity": 2,
              "monitor": "min val_loss", "early_stop": 10, "tensorboard": true}
}
"""

# The same config as a user would write it in YAML, with `1e-3` (no dot) for the rate.
CONFIG_YAML = """\
name: Mnist_LeNet
n_gpu: 1
seed: 0
arch: {type: LeNet, args: {}}
data_loader:
  type: Mnist5kDataLoader
  args:
    data_dir: data/
    batch_size: 128
    shuffle: true
    validation_split: 0.1
    num_workers: 2
optimizer:
  type: Adam
  args: {lr: 1e-3, weight_decay: 0, amsgrad: true}
loss: nll_loss
metrics: [accuracy, top_k_acc]
lr_scheduler:
  type: StepLR
  args: {step_size: 50, gamma: 0.1}
trainer:
  epochs: 10
  save_dir: saved/
  save_period: 1
  verbosity: 2
  monitor: min val_loss
  early_stop: 10
  tensorboard: true
"""


def minimal_config() -> dict:
    """Only the required keys."""
    return {
        "name": "Toy",
        "arch": {"type": "LeNet", "args": {}},
        "data_loader": {"type": "Mnist5kDataLoader", "args": {"data_dir": "data/"}},
        "optimizer": {"type": "Adam", "args": {"lr": 0.001}},
        "loss": "nll_loss",
        "trainer": {"epochs": 2},
    }


def with_value(path: str, value) -> dict:
    """`minimal_config()` with the dotted `path` set to `value`."""
    config = minimal_config()
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[last] = value
    return config


def without(path: str) -> dict:
    config = minimal_config()
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node[part]
    del node[last]
    return config


def resolve_error(config: dict) -> str:
    with pytest.raises(UserError) as error:
        resolve_config(config)
    return str(error.value)


# ---------------------------------------------------------------- load_config_file


def test_json_and_yaml_give_the_same_dict(tmp_path):
    (tmp_path / "run.json").write_text(CONFIG_JSON)
    (tmp_path / "run.yaml").write_text(CONFIG_YAML)
    (tmp_path / "run.yml").write_text(CONFIG_YAML)
    from_json = load_config_file(tmp_path / "run.json")
    assert from_json == json.loads(CONFIG_JSON)
    assert load_config_file(tmp_path / "run.yaml") == from_json
    assert load_config_file(str(tmp_path / "run.yml")) == from_json


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1e-3", 0.001), ("1E-3", 0.001), ("-2e-4", -0.0002), ("1e3", 1000.0), ("1.5e+2", 150.0)],
)
def test_yaml_exponent_without_dot_is_a_float(tmp_path, text, expected):
    (tmp_path / "c.yaml").write_text(f"lr: {text}\n")
    value = load_config_file(tmp_path / "c.yaml")["lr"]
    assert isinstance(value, float)
    assert value == pytest.approx(expected)


def test_yaml_keeps_ordinary_scalars(tmp_path):
    (tmp_path / "c.yaml").write_text("a: 3\nb: 0.5\nc: true\nd: null\ne: min val_loss\nf: '1e-3'\n")
    assert load_config_file(tmp_path / "c.yaml") == {
        "a": 3,
        "b": 0.5,
        "c": True,
        "d": None,
        "e": "min val_loss",
        "f": "1e-3",  # quoted stays a string
    }


@pytest.mark.parametrize("name", ["config.txt", "config.toml", "config", "config.JSON5"])
def test_unknown_extension_is_refused(tmp_path, name):
    path = tmp_path / name
    path.write_text(CONFIG_JSON)
    with pytest.raises(UserError, match="extension") as error:
        load_config_file(path)
    assert str(path) in str(error.value)


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "absent.json"
    with pytest.raises(UserError) as error:
        load_config_file(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("bad.json", '{"name": "x",}'),
        ("bad.json", '{"name": '),
        ("bad.yaml", "name: [1, 2\n"),
        ("bad.yml", "a: b: c\n"),
    ],
)
def test_invalid_syntax_names_the_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UserError, match="not valid") as error:
        load_config_file(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(("name", "text"), [("l.json", "[1, 2]"), ("s.yaml", "just text\n")])
def test_top_level_must_be_a_mapping(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UserError, match="mapping") as error:
        load_config_file(path)
    assert str(path) in str(error.value)


# ---------------------------------------------------------------- apply_overrides


def test_overrides_set_dotted_keys_with_yaml_values():
    config = json.loads(CONFIG_JSON)
    result = apply_overrides(
        config,
        [
            "trainer.epochs=3",
            "optimizer.args.lr=1e-3",
            "optimizer.args.weight_decay=0.01",
            "trainer.tensorboard=false",
            "seed=null",
            "data_loader.args.shuffle=true",
            "trainer.monitor=max val_accuracy",
            "name=My_Run",
        ],
    )
    assert result["trainer"]["epochs"] == 3 and type(result["trainer"]["epochs"]) is int
    assert result["optimizer"]["args"]["lr"] == 0.001
    assert isinstance(result["optimizer"]["args"]["lr"], float)
    assert result["optimizer"]["args"]["weight_decay"] == 0.01
    assert result["trainer"]["tensorboard"] is False
    assert result["seed"] is None
    assert result["data_loader"]["args"]["shuffle"] is True
    assert result["trainer"]["monitor"] == "max val_accuracy"
    assert result["name"] == "My_Run"
    # everything else untouched
    assert result["arch"] == config["arch"]
    assert result["trainer"]["save_dir"] == "saved/"


def test_overrides_do_not_modify_the_input():
    config = json.loads(CONFIG_JSON)
    before = copy.deepcopy(config)
    apply_overrides(config, ["trainer.epochs=3", "lr_scheduler.args.gamma=0.5", "new.key=1"])
    assert config == before


def test_later_override_wins_and_value_may_contain_equals():
    result = apply_overrides(minimal_config(), ["trainer.epochs=3", "trainer.epochs=4", "name=a=b"])
    assert result["trainer"]["epochs"] == 4
    assert result["name"] == "a=b"


def test_override_creates_missing_intermediate_when_null():
    config = json.loads(CONFIG_JSON)
    config["lr_scheduler"] = None
    result = apply_overrides(config, ["lr_scheduler.type=StepLR", "lr_scheduler.args.step_size=5"])
    assert result["lr_scheduler"] == {"type": "StepLR", "args": {"step_size": 5}}
    assert resolve_config(result)["lr_scheduler"] == {
        "type": "StepLR", "args": {"step_size": 5}, "interval": None
    }  # fmt: skip


def test_override_creates_missing_key():
    result = apply_overrides(minimal_config(), ["trainer.keep_last=3", "lr_scheduler.type=StepLR"])
    assert result["trainer"]["keep_last"] == 3
    assert result["lr_scheduler"] == {"type": "StepLR"}


def test_monitor_off_from_an_override_or_yaml_is_off(tmp_path):
    # 'off' is the documented value; YAML 1.1 would read a bare `off` as false.
    resolved = resolve_config(apply_overrides(minimal_config(), ["trainer.monitor=off"]))
    assert resolved["trainer"]["monitor"] == "off"
    (tmp_path / "c.yaml").write_text("trainer:\n  epochs: 2\n  monitor: off\n")
    assert load_config_file(tmp_path / "c.yaml")["trainer"]["monitor"] == "off"


@pytest.mark.parametrize("item", ["trainer.epochs", "=3", "", "trainer.epochs3"])
def test_malformed_override_is_refused(item):
    with pytest.raises(UserError, match="KEY=VALUE") as error:
        apply_overrides(minimal_config(), [item])
    assert repr(item) in str(error.value)


@pytest.mark.parametrize(
    ("item", "blocking"),
    [
        ("trainer.epochs.max=3", "trainer.epochs"),
        ("name.first=x", "name"),
        ("loss.args.reduction=sum", "loss"),  # loss is a bare name here, not a mapping
        ("optimizer.args.lr.value=1", "optimizer.args.lr"),
    ],
)
def test_override_through_a_non_mapping_is_refused(item, blocking):
    with pytest.raises(UserError, match="not a mapping") as error:
        apply_overrides(minimal_config(), [item])
    assert blocking in str(error.value)


def test_an_override_reaches_into_a_list_by_the_path_errors_name():
    """`trainer.hooks[0].args.decay` is the path a config error names, so it is the path to
    correct it with; the entry's other values stay."""
    config = minimal_config()
    config["trainer"]["hooks"] = [{"type": "EMA", "args": {"decay": 0.9, "every": 2}}]
    config["metrics"] = ["accuracy", {"type": "top_k_acc", "args": {"k": 3}}]
    result = apply_overrides(
        config, ["trainer.hooks[0].args.decay=0.99", "metrics[1].args.k=5", "metrics[0]=null"]
    )
    assert result["trainer"]["hooks"] == [{"type": "EMA", "args": {"decay": 0.99, "every": 2}}]
    assert result["metrics"] == [None, {"type": "top_k_acc", "args": {"k": 5}}]
    nested = apply_overrides({"grid": [[1, 2], [3, 4]]}, ["grid[1][0]=7"])
    assert nested["grid"] == [[1, 2], [7, 4]]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("trainer.hooks.0.args.decay=1", "write an entry of a list as [0], not .0"),
        ("trainer.hooks[1].args.decay=1", "trainer.hooks has 1 entry, so no entry [1]; to add "
         "one, set the whole list (trainer.hooks=[...])"),
        ("metrics[0]=accuracy", "metrics has 0 entries, so no entry [0]"),
        ("trainer.epochs[0]=1", "trainer.epochs is not a list, so it has no entry [0]"),
        ("trainer.hooks.decay=1", "trainer.hooks is not a mapping, so it has no key 'decay'; an "
         "entry of a list is trainer.hooks[N]"),
        ("trainer..epochs=1", "not a key path; expected names joined by dots, and [N]"),
        ("trainer.hooks[x]=1", "not a key path"),
        ("trainer.hooks[-1]=1", "not a key path"),
    ],
)  # fmt: skip
def test_an_override_that_misses_a_list_entry_says_how_to_write_one(item, message):
    config = minimal_config()
    config["trainer"]["hooks"] = [{"type": "EMA", "args": {"decay": 0.9}}]
    with pytest.raises(UserError) as error:
        apply_overrides(config, [item])
    assert str(error.value).startswith(f"-o {item.partition('=')[0]}: ")
    assert message in str(error.value)


# ---------------------------------------------------------------- resolve_config: defaults


def test_defaults_are_filled_in():
    resolved = resolve_config(minimal_config())
    assert resolved["n_gpu"] == 1
    assert resolved["seed"] is None
    assert resolved["metrics"] == []
    assert resolved["lr_scheduler"] is None
    assert resolved["optimizer"]["param_groups"] == []
    assert resolved["trainer"] == {
        "type": "Trainer",
        "hooks": [],
        "log_images": True,
        "epochs": 2,
        "save_dir": "saved/",
        "save_period": 1,
        "keep_last": None,
        "verbosity": 2,
        "monitor": "off",
        "early_stop": 0,
        "tensorboard": True,
        "metrics_csv": True,
        "len_epoch": None,
        "log_step": 10,
        "progress_bar": True,
        "amp": False,
        "accumulate_steps": 1,
        "clip_grad_norm": None,
        "compile": False,
        "channels_last": False,
        "cudnn_benchmark": False,
        "save_every_steps": None,
        "on_nonfinite": None,
        "max_skipped": 10,
        "strategy": None,
    }
    assert resolved["test"] == {"report": "auto"}


def test_every_trainer_key_is_covered_by_the_defaults_test():
    # A new trainer key must get its documented default checked in test_defaults_are_filled_in.
    assert set(resolve_config(minimal_config())["trainer"]) == set(TRAINER_KEYS)


def test_given_values_are_kept():
    config = json.loads(CONFIG_JSON)
    resolved = resolve_config(config)
    assert resolved["trainer"]["monitor"] == "min val_loss"
    assert resolved["trainer"]["save_period"] == 1
    assert resolved["optimizer"] == {**config["optimizer"], "param_groups": []}
    assert resolved["lr_scheduler"] == {**config["lr_scheduler"], "interval": None}


def test_resolving_is_idempotent():
    # The resolved config is written to the run directory and read back on resume.
    once = resolve_config(json.loads(CONFIG_JSON))
    assert resolve_config(copy.deepcopy(once)) == once
    assert json.loads(json.dumps(once)) == once


def test_bare_names_become_nodes():
    config = minimal_config()
    config["metrics"] = ["accuracy", {"type": "top_k_acc", "args": {"k": 5}}, {"type": "x"}]
    resolved = resolve_config(config)
    assert resolved["loss"] == {"type": "nll_loss", "args": {}}
    assert resolved["metrics"] == [  # a metric's logged `name` defaults to null: its type
        {"type": "accuracy", "args": {}, "name": None},
        {"type": "top_k_acc", "args": {"k": 5}, "name": None},
        {"type": "x", "args": {}, "name": None},
    ]


def test_node_without_args_or_with_null_args_gets_empty_args():
    config = minimal_config()
    config["arch"] = {"type": "LeNet"}
    config["lr_scheduler"] = {"type": "StepLR", "args": None}
    resolved = resolve_config(config)
    assert resolved["arch"] == {"type": "LeNet", "args": {}}
    assert resolved["lr_scheduler"] == {"type": "StepLR", "args": {}, "interval": None}


# ---------------------------------------------------------------- resolve_config: errors


@pytest.mark.parametrize(
    ("config", "path", "suggestion"),
    [
        ({**minimal_config(), "optimiser": {}}, "optimiser", "'optimizer'"),
        ({**minimal_config(), "metric": []}, "metric", "'metrics'"),
        (with_value("trainer.epoch", 3), "trainer.epoch", "'epochs'"),
        (with_value("trainer.early_stopping", 3), "trainer.early_stopping", "'early_stop'"),
        (with_value("trainer.save_dri", "x"), "trainer.save_dri", "'save_dir'"),
    ],
)
def test_unknown_key_names_path_and_suggests(config, path, suggestion):
    message = resolve_error(config)
    assert path in message
    assert "did you mean" in message and suggestion in message


def test_unknown_key_without_close_match_lists_valid_keys():
    message = resolve_error({**minimal_config(), "zzzz": 1})
    assert "zzzz" in message
    assert "optimizer" in message and "trainer" in message


@pytest.mark.parametrize(
    ("config", "path"),
    [
        # YAML turns `1:`, `on:` and `null:` keys into non-strings; still a config mistake.
        ({**minimal_config(), 1: "x"}, "1"),
        (with_value("trainer", {"epochs": 2, True: 1}), "trainer.True"),
    ],
)
def test_unknown_non_string_key_is_a_user_error(config, path):
    assert path in resolve_error(config)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("trainer.epochs", True),  # bool is not an int here
        ("trainer.epochs", False),
        ("trainer.epochs", 1.5),
        ("trainer.epochs", "10"),
        ("trainer.epochs", None),
        ("trainer.save_period", True),
        ("trainer.early_stop", 2.0),
        ("trainer.tensorboard", 1),  # int is not a bool either
        ("trainer.tensorboard", "yes"),
        ("trainer.progress_bar", 0),
        ("trainer.save_dir", None),
        ("trainer.save_dir", 5),
        ("trainer.monitor", False),
        ("trainer.keep_last", "3"),
        ("seed", True),
        ("seed", 1.0),
        ("n_gpu", "1"),
        ("name", 5),
        ("metrics", "accuracy"),
        ("lr_scheduler", "StepLR"),
        ("trainer", None),
        ("trainer", [1]),
        ("arch", "LeNet"),  # only loss and metrics accept a bare name
        ("optimizer", ["Adam"]),
        ("loss", 3),
    ],
)
def test_wrong_type_names_the_key(path, value):
    message = resolve_error(with_value(path, value))
    assert path in message
    assert "valid" in message or "expected" in message


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("trainer.epochs", 0),
        ("trainer.epochs", -1),
        ("trainer.verbosity", 5),
        ("trainer.verbosity", -1),
        ("trainer.verbosity", True),  # equal to 1 in Python, but not an integer in a config
        ("trainer.verbosity", False),
        ("trainer.amp", 0),  # equal to false
        ("trainer.amp", 1),
        ("trainer.monitor", "mid val_loss"),
        ("trainer.monitor", "min"),
        ("trainer.monitor", "min val loss"),
        ("trainer.monitor", "val_loss"),
        ("trainer.monitor", ""),
        ("trainer.save_period", 0),
        ("trainer.early_stop", -1),
        ("trainer.keep_last", 0),
        ("trainer.len_epoch", 0),
        ("trainer.log_step", 0),
        ("n_gpu", -1),
        ("seed", -1),
        ("name", ""),
        ("name", "a/b"),
    ],
)
def test_out_of_range_names_the_key(path, value):
    message = resolve_error(with_value(path, value))
    assert path in message
    assert repr(value) in message


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("trainer.epochs", 1),
        ("trainer.verbosity", 0),
        ("trainer.monitor", "off"),
        ("trainer.monitor", "max val_loss"),
        ("trainer.early_stop", 0),
        ("trainer.keep_last", 1),
        ("trainer.len_epoch", None),
        ("n_gpu", 0),
        ("seed", 0),
        ("seed", None),
        ("lr_scheduler", None),
    ],
)
def test_boundary_values_are_accepted(path, value):
    resolved = resolve_config(with_value(path, value))
    *parents, last = path.split(".")
    node = resolved
    for part in parents:
        node = node[part]
    assert node[last] == value


@pytest.mark.parametrize(
    "path", ["name", "arch", "data_loader", "optimizer", "trainer", "trainer.epochs"]
)
def test_missing_required_key(path):
    message = resolve_error(without(path))
    assert path in message
    assert "missing" in message


@pytest.mark.parametrize(
    ("path", "node", "reported"),
    [
        ("arch", {"type": "LeNet", "args": {}, "kwargs": {}}, "arch.kwargs"),
        ("optimizer", {"type": "Adam", "arg": {}}, "optimizer.arg"),
        ("loss", {"type": "nll_loss", "args": {}, "weight": 1}, "loss.weight"),
        ("lr_scheduler", {"type": "StepLR", "args": {}, "x": 1}, "lr_scheduler.x"),
    ],
)
def test_node_with_extra_key_is_refused(path, node, reported):
    assert reported in resolve_error(with_value(path, node))


def test_metric_node_errors_name_the_index():
    config = minimal_config()
    config["metrics"] = ["accuracy", {"type": "top_k_acc", "argz": {}}]
    assert "metrics[1].argz" in resolve_error(config)
    config["metrics"] = ["accuracy", 5]
    assert "metrics[1]" in resolve_error(config)


@pytest.mark.parametrize(
    ("node", "reported"),
    [
        ({"args": {}}, "arch.type"),
        ({"type": "", "args": {}}, "arch.type"),
        ({"type": 3, "args": {}}, "arch.type"),
        ({"type": "LeNet", "args": [1]}, "arch.args"),
        ({"type": "LeNet", "args": "x"}, "arch.args"),
    ],
)
def test_malformed_node_is_refused(node, reported):
    assert reported in resolve_error(with_value("arch", node))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(value):
    config = minimal_config()
    config["optimizer"]["args"]["lr"] = value
    assert "optimizer.args.lr" in resolve_error(config)


def test_non_finite_float_inside_a_list_is_refused():
    config = minimal_config()
    config["optimizer"]["args"]["betas"] = [0.9, math.inf]
    assert "optimizer.args.betas[1]" in resolve_error(config)


def test_non_finite_float_from_a_json_file_is_refused(tmp_path):
    # Python's json module reads NaN and Infinity, so the file alone does not catch them.
    path = tmp_path / "c.json"
    path.write_text(CONFIG_JSON.replace('"lr": 0.001', '"lr": NaN'))
    assert "optimizer.args.lr" in resolve_error(load_config_file(path))


# ---------------------------------------------------------------- parse_monitor


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("off", ("off", "")),
        ("min val_loss", ("min", "val_loss")),
        ("max val_accuracy", ("max", "val_accuracy")),
        ("max accuracy", ("max", "accuracy")),
    ],
)
def test_parse_monitor_valid(text, expected):
    assert parse_monitor(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "mid val_loss", "min", "min ", "max  val_loss", "min val loss", "Min val_loss", "OFF"],
)
def test_parse_monitor_invalid(text):
    assert parse_monitor(text) is None


def test_all_problems_are_reported_together():
    config = minimal_config()
    config["trainer"].update({"epochs": 0, "monitor": "max nope sense", "bogus": 1})
    config["data_loader"]["args"].update({"batch_size": 0, "validation_split": 1.0})
    with pytest.raises(UserError) as error:
        resolve_config(config)
    problems = str(error.value).split(" | ")
    assert [p.split(":")[0] for p in problems] == [
        "trainer.bogus",
        "trainer.epochs",
        "trainer.monitor",
        "data_loader.args.batch_size",
        "data_loader.args.validation_split",
    ]
    assert "\n" not in str(error.value)
