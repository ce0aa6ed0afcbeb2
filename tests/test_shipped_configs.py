"""Every config in config/ resolves, builds its own data loader, models and trainer, and takes
a training step on its own data."""

import math
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from base.metric_tracker import MetricInputs
from builder import build_models, build_trainer, trainer_keys
from utils.batch import to_device
from utils.config.check import apply_overrides, load_config_file, node_path, resolve_config
from utils.errors import UserError

CPU = torch.device("cpu")

SHIPPED = sorted((ROOT / "config").glob("*.*"))


def test_there_are_shipped_configs() -> None:
    assert {p.name for p in SHIPPED} >= {"config.json", "config.yaml"}


def test_json_and_yaml_defaults_agree() -> None:
    as_json = resolve_config(load_config_file(ROOT / "config" / "config.json"))
    as_yaml = resolve_config(load_config_file(ROOT / "config" / "config.yaml"))
    assert as_json == as_yaml


F1 = "{type: MulticlassF1Score, args: {num_classes: 10, average: macro}}"  # a torchmetrics one


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        *(pytest.param(path, [], id=path.name) for path in SHIPPED),
        pytest.param(ROOT / "config" / "config.json", [f"metrics=[{F1}]"],
                     id="config.json+MulticlassF1Score"),
    ],
)  # fmt: skip
def test_shipped_config_builds_and_takes_a_step(path: Path, extra: list, tmp_path: Path) -> None:
    raw = load_config_file(path)
    data_dir = raw["data_loader"]["args"].get("data_dir")
    overrides = [f"trainer.save_dir={tmp_path}", "trainer.compile=false", *extra]
    if data_dir is not None and not raw["data_loader"]["args"].get("download"):
        overrides.append(f"data_loader.args.data_dir={ROOT / data_dir}")
    overrides += stand_in_weights(resolve_config(apply_overrides(raw, overrides), trainer_keys),
                                  tmp_path)  # fmt: skip
    config = resolve_config(apply_overrides(raw, overrides), trainer_keys)
    if config["data_loader"]["args"].get("download"):
        # Building would fetch the data set; offline, the same loader must fail clearly.
        config["data_loader"]["args"].update(data_dir=str(tmp_path), download=False)
        with pytest.raises(UserError, match="download"):
            build_trainer(config, CPU)
        return
    trainer = build_trainer(config, CPU)
    batch = next(iter(trainer.batches.data_loader))
    values = trainer.train_step(to_device(batch, CPU))
    assert set(values) <= set(trainer.logged_names())
    numbers = [v for v in values.values() if not isinstance(v, MetricInputs)]  # (torchmetrics')
    assert values and all(math.isfinite(float(value.detach())) for value in numbers)


def stand_in_weights(config: dict, directory: Path) -> list[str]:
    """`-o` overrides that give each model whose config names initial weights (a pretrained
    file the README says how to get, absent from a fresh clone) a file of its own shapes:
    its state as built without them (`BaseModel.initial_weights_argument`)."""
    models = build_models(config, weights_from_checkpoint=True)
    overrides = []
    for name, model in models.items():
        path = node_path(config, "arch", name)
        node = config["arch"] if path == "arch" else config["arch"][name]
        argument = getattr(model, "initial_weights_argument", None)
        if argument and node["args"].get(argument) is not None:
            torch.save(model.state_dict(), directory / f"{name}.weights.pth")
            overrides.append(f"{path}.args.{argument}={directory / f'{name}.weights.pth'}")
    return overrides
