"""Transfer learning: `TorchvisionModel` (model/torchvision_model.py) with its example config,
frozen layers and parameter groups, through the builder, train.py, test.py and resume."""

import importlib.util
import logging
import math
import shutil
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import ROOT, load, read_json, run_dir, shrunk
from test_cli_errors import assert_refused, run_in_process
from torch import nn

import train
from base.resume_changes import resume_with_changes
from builder import build_optimizers, build_trainer, trainer_keys
from model.torchvision_model import TorchvisionModel
from utils.config.check import load_run_config

_spec = importlib.util.spec_from_file_location("test_script", ROOT / "test.py")
test_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(test_script)

CONFIG = str(ROOT / "config" / "finetune_resnet18.json")
NAME = "Mnist_ResNet18_FineTune"
FROZEN = ("conv1.*", "bn1.*", "layer1.*")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for torchvision's ImageNet weights: a resnet18 state dict, 1000 classes."""
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def fine_tune_options(save_dir: Path, weights: Path) -> list[str]:
    """The example config shrunk, with the stand-in weights and a small validation split."""
    extra = [f"arch.args.weights={weights}", "data_loader.args.validation_split=32",
             "data_loader.args.batch_size=16", "trainer.progress_bar=false"]  # fmt: skip
    return [*shrunk(save_dir), *(item for setting in extra for item in ("-o", setting))]


def optimizer_of(model: nn.Module, node: dict) -> torch.optim.Optimizer:
    return build_optimizers({"optimizer": node}, {"model": model})["model"]


# ---------------------------------------------------------------- freezing


def test_frozen_weights_do_not_change_and_the_others_do(caplog) -> None:
    """Frozen parameters (and the running statistics of their batch norms) stay bit for bit;
    the optimizer holds only the trainable ones; one log line counts the frozen ones."""
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO):
        model = TorchvisionModel("resnet18", num_classes=10, in_channels=1, freeze=FROZEN)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("conv1.", "bn1.", "layer1.")) for n in frozen)
    count = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    line = (f"arch.args.freeze: {count:,} of {total:,} parameters frozen ({len(frozen)} tensors "
            "matching conv1.*, bn1.*, layer1.*)")  # fmt: skip
    assert line in caplog.messages
    assert f"({count:,} frozen in {len(frozen)} tensors)" in str(model)

    optimizer = optimizer_of(model, {"type": "SGD", "args": {"lr": 0.1}})
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in model.parameters() if p.requires_grad}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        nn.functional.nll_loss(model(torch.randn(4, 1, 16, 16)), torch.arange(4)).backward()
        optimizer.step()
    after = model.state_dict()
    for key, value in before.items():
        unchanged = torch.equal(value, after[key])
        if key.startswith(("conv1.", "bn1.", "layer1.")):
            assert unchanged, key  # weights, and the frozen batch norms' running statistics
        elif key.endswith(("weight", "bias")):
            assert not unchanged, key


def test_a_frozen_batch_norm_stays_in_eval_mode() -> None:
    model = TorchvisionModel("resnet18", num_classes=10, freeze=["bn1.*"]).train()
    assert not model.bn1.training and model.layer1[0].bn1.training
    assert model.train(False).network.training is False


# ---------------------------------------------------------------- parameter groups


# ---------------------------------------------------------------- weights, heads, channels


def test_weights_from_a_local_file_with_a_new_head_and_one_input_channel(
    resnet18_file: Path,
) -> None:
    saved = torch.load(resnet18_file, weights_only=True)
    model = TorchvisionModel("resnet18", num_classes=10, weights=str(resnet18_file),
                             in_channels=1)  # fmt: skip
    own = model.state_dict()
    assert own.keys() == saved.keys()  # torchvision's own names
    backbone = [k for k in own if not k.startswith(("fc.", "conv1."))]
    assert all(torch.equal(own[k], saved[k]) for k in backbone)
    assert (model.fc.in_features, model.fc.out_features) == (512, 10)
    assert model.conv1.in_channels == 1
    assert torch.equal(model.conv1.weight, saved["conv1.weight"].sum(1, keepdim=True))
    output = model.eval()(torch.randn(2, 1, 28, 28))
    assert output.shape == (2, 10)
    torch.testing.assert_close(output.exp().sum(1), torch.ones(2))  # log-probabilities


def test_one_of_our_checkpoints_loads_head_and_all(resnet18_file: Path, tmp_path: Path) -> None:
    first = TorchvisionModel("resnet18", num_classes=10, weights=str(resnet18_file),
                             in_channels=1)  # fmt: skip
    torch.save({"state_dict": first.state_dict(), "epoch": 1}, tmp_path / "checkpoint.pth")
    again = TorchvisionModel("resnet18", num_classes=10, weights=str(tmp_path / "checkpoint.pth"),
                             in_channels=1)  # fmt: skip
    for key, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_other_families_get_a_new_head(tmp_path: Path) -> None:
    """A stand-in file for mobilenet_v3_small (head `classifier.3`); efficientnet_b0's
    (`classifier.1`) and vit_b_16's (`heads.head`) heads built for num_classes directly."""
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), tmp_path / "m.pth")
    model = TorchvisionModel("mobilenet_v3_small", num_classes=7, weights=str(tmp_path / "m.pth"),
                             in_channels=1)  # fmt: skip
    assert model.classifier[3].out_features == 7 and model.features[0][0].in_channels == 1
    assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    assert TorchvisionModel("efficientnet_b0", num_classes=7).classifier[1].out_features == 7
    vit = TorchvisionModel("vit_b_16", num_classes=7, in_channels=1)
    assert vit.heads.head.out_features == 7 and vit.conv_proj.in_channels == 1


def test_without_the_log_softmax_the_head_gives_raw_values_a_regression_trains_on() -> None:
    """A regression of two values per image: the head's outputs as they are, which a few Adam
    steps of MSE bring towards the targets (log-probabilities never could: they are <= 0)."""
    torch.manual_seed(0)
    model = TorchvisionModel("resnet18", num_classes=2, in_channels=1, log_softmax=False)
    images, targets = torch.randn(8, 1, 32, 32), torch.rand(8, 2) + 1  # targets in [1, 2)
    assert torch.equal(model(images), model.network(images))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.mse_loss(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2
    assert (TorchvisionModel("resnet18", num_classes=3)(images.repeat(1, 3, 1, 1)) <= 0).all()


# ---------------------------------------------------------------- refusals


def other_architecture(tmp_path: Path) -> str:
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), path)
    return f"arch.args.weights={path}"


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        (lambda _: "arch.args.name=resnet19", ["arch.args.name", "did you mean 'resnet18'"]),
        (lambda t: f"arch.args.weights={t}/missing.pth",
         ["arch.args.weights", "missing.pth", "python -c", "null"]),
        (other_architecture, ["arch.args.weights", "resnet34.pth", "does not fit", "unexpected"]),
        (lambda _: "arch.args.freeze=[layr1.*]", ["arch.args.freeze[0]", "'layr1.*'"]),
        (lambda _: "arch.args.freeze=['*']", ["arch: every parameter of model is frozen"]),
        (lambda _: "arch.args.freeze=layer1.*", ["arch.args.freeze: 'layer1.*' is not valid"]),
        (lambda _: "arch.args.num_classes=0", ["arch.args.num_classes: 0 is not valid for "
                                               "TorchvisionModel", "greater than or equal to 1"]),
        # One output under a log-softmax is 0 whatever the input: nothing would train.
        (lambda _: "arch.args.num_classes=1", ["arch.args.num_classes: 1, under a log-softmax, "
                                               "is always 0; for one value (a regression) set "
                                               "arch.args.log_softmax to false"]),
        (lambda _: "optimizer.param_groups=[{params: [layr4.*], lr: 0.01}]",
         ["optimizer.param_groups[0].params[0]", "'layr4.*'", "no trainable parameter"]),
        (lambda _: "optimizer.param_groups=[{params: [fc.*], lrr: 0.01}]",
         ["optimizer.param_groups[0].lrr", "AdamW takes no argument", "did you mean 'lr'"]),
        (lambda _: "optimizer.param_groups=[{params: [fc.*], lr: -1}]",
         ["optimizer.param_groups", "AdamW rejects", "fc.*"]),
    ],
)  # fmt: skip
def test_bad_transfer_settings_are_refused_in_one_line(
    tmp_path: Path, resnet18_file: Path, capsys, override, fragments: list[str]
) -> None:
    save_dir = tmp_path / "saved"
    argv = ["-c", CONFIG, *fine_tune_options(save_dir, resnet18_file), "-o", override(tmp_path)]
    assert_refused(train.main, argv, capsys, *fragments)
    assert not save_dir.exists()


def test_a_failed_download_of_torchvision_weights_is_one_line(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """The one case that downloads; here (as offline) it fails, at once."""

    def offline(url: str, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    save_dir = tmp_path / "saved"
    argv = ["-c", CONFIG, *shrunk(save_dir), "-o", "arch.args.weights=IMAGENET1K_V1"]
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    assert_refused(train.main, argv, capsys, "arch.args.weights", url, "no network", "by hand")
    assert not save_dir.exists()


# ---------------------------------------------------------------- train, resume, evaluate


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory: pytest.TempPathFactory, resnet18_file: Path) -> Path:
    """The saved directory of the example config trained 2 shrunk epochs through train.py."""
    save_dir = tmp_path_factory.mktemp("fine_tuned") / "saved"
    handlers = list(logging.getLogger().handlers)
    assert train.main(["-c", CONFIG, *fine_tune_options(save_dir, resnet18_file)]) == 0
    for handler in logging.getLogger().handlers[len(handlers) :]:  # (train.main set them up)
        logging.getLogger().removeHandler(handler)
        handler.close()
    return save_dir


def lrs(checkpoint: dict) -> list[float]:
    return [group["lr"] for group in checkpoint["optimizer"]["param_groups"]]


@pytest.mark.slow
def test_the_example_trains_resumes_with_its_groups_and_evaluates(
    fine_tuned: Path, resnet18_file: Path, tmp_path: Path, capsys
) -> None:
    """...also without the initial weights file: a checkpoint's weights replace it."""
    saved = tmp_path / "saved"
    shutil.copytree(fine_tuned, saved)
    models = run_dir(saved, NAME)
    uninterrupted = load(models / "checkpoint-epoch2.pth")
    assert lrs(uninterrupted)[1:3] == [pytest.approx(lrs(uninterrupted)[0] / 10)] * 2
    assert len(lrs(uninterrupted)) == 4  # head; backbone; backbone norms, biases; head bias

    moved = resnet18_file.rename(tmp_path / "moved.pth")  # (put back below, for other tests)
    try:
        code, stderr = run_in_process(train.main, ["-r", str(models / "checkpoint-epoch1.pth")],
                                      capsys)  # fmt: skip
        assert code == 0, stderr
        resumed = load(models / "checkpoint-epoch2.pth")
        assert lrs(resumed) == lrs(uninterrupted)
        for key, value in uninterrupted["state_dict"].items():
            assert torch.equal(value, resumed["state_dict"][key]), key

        code, stderr = run_in_process(test_script.main, ["-r", str(models)], capsys)
    finally:
        moved.rename(resnet18_file)
    assert code == 0, stderr
    metrics = read_json(models / "model_best.test_metrics.json")
    assert metrics["checkpoint"] == "model_best.pth" and metrics["n_samples"] == 1000
    assert 0 <= metrics["accuracy"] <= 1 and math.isfinite(metrics["loss"])


@pytest.mark.slow  # (the fixture trains)
def test_resume_with_changed_param_groups_is_refused(fine_tuned: Path, tmp_path: Path, capsys):
    saved = tmp_path / "saved"
    shutil.copytree(fine_tuned, saved)
    before = sorted(p.name for p in saved.rglob("*"))
    checkpoint = str(run_dir(saved, NAME) / "checkpoint-epoch1.pth")
    change = "optimizer.param_groups=[{params: [layer4.*], lr: 0.0001}]"
    assert_refused(train.main, ["-r", checkpoint, "-o", change], capsys,
                   "optimizer.param_groups", "on resume", "fine-tune")  # fmt: skip
    assert sorted(p.name for p in saved.rglob("*")) == before


@pytest.mark.slow  # (the fixture trains)
def test_a_changed_base_lr_leaves_a_group_with_its_own_lr_alone(fine_tuned: Path) -> None:
    """`--lr` is the new base of the groups without their own lr; `weight_decay` likewise
    reaches only the groups that do not set it. (Needs the resume_changes unit too.)"""
    pytest.importorskip("base.optimizer_argument_changes")
    checkpoint = load(run_dir(fine_tuned, NAME) / "checkpoint-epoch1.pth")
    changes = ["optimizer.args.lr=0.002", "optimizer.args.weight_decay=0.1"]
    config = load_run_config(None, checkpoint, changes, trainer_keys)
    trainer = build_trainer(config, CPU, weights_from_checkpoint=True)
    resume_with_changes(trainer, checkpoint)
    groups = trainer.optimizers["model"].param_groups
    saved = checkpoint["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx(
        [saved[0]["lr"] * 2, saved[1]["lr"], saved[2]["lr"], saved[3]["lr"] * 2]
    )
    assert [g["initial_lr"] for g in groups] == pytest.approx([0.002, 0.0001, 0.0001, 0.002])
    assert trainer.lr_schedulers["model"].base_lrs == pytest.approx([0.002, 1e-4, 1e-4, 0.002])
    assert [g["weight_decay"] for g in groups] == [0.1, 0.1, 0, 0]
