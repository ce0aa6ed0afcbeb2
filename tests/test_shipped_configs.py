"""Every config in config/ resolves and builds into a model, loss, metrics and optimizer."""

from pathlib import Path

import pytest
import torch
from conftest import ROOT

from trainer.components import (
    build_data_loader,
    build_loss,
    build_lr_scheduler,
    build_metrics,
    build_model,
    build_optimizer,
)
from utils.config import load_config_file, resolve_config
from utils.errors import UserError

CPU = torch.device("cpu")

SHIPPED = sorted((ROOT / "config").glob("*.*"))


def test_there_are_shipped_configs() -> None:
    assert {p.name for p in SHIPPED} >= {"config.json", "config.yaml"}


def test_json_and_yaml_defaults_agree() -> None:
    as_json = resolve_config(load_config_file(ROOT / "config" / "config.json"))
    as_yaml = resolve_config(load_config_file(ROOT / "config" / "config.yaml"))
    assert as_json == as_yaml


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_builds(path: Path, tmp_path: Path) -> None:
    config = resolve_config(load_config_file(path))
    model = build_model(config)
    output = model(torch.zeros(2, 1, 28, 28))
    criterion = build_loss(config)
    target = torch.tensor([0, 1])
    assert criterion(output, target).ndim == 0
    for metric in build_metrics(config).values():
        assert 0 <= float(metric(output, target)) <= 1
    optimizer = build_optimizer(config, model.parameters())
    build_lr_scheduler(config, optimizer)
    args = config["data_loader"]["args"]
    if args.get("download"):
        # Building would fetch full MNIST; offline, the same loader must fail clearly.
        with pytest.raises(UserError, match="download"):
            build_data_loader(config, CPU, data_dir=str(tmp_path), download=False)
    else:
        loader = build_data_loader(
            config, torch.device("cpu"), data_dir=str(ROOT / args["data_dir"])
        )
        images, labels = next(iter(loader))
        assert images.shape[1:] == (1, 28, 28) and len(labels) == args["batch_size"]
