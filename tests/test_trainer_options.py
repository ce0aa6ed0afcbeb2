"""Trainer options: accumulate_steps, clip_grad_norm, amp (bf16/fp16 + GradScaler in
checkpoints), compile, channels_last, and how resolve_config rejects bad values."""

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, load, run_dir, run_script
from conftest import make_trainer as build
from conftest import toy_config as make_config
from torch import nn

from base.model_wrapping import wrap_model
from base.tensor_data_loader import TensorDataLoader
from model.model import LeNet
from trainer.trainer import Trainer
from utils.checkpoint.files import save_checkpoint
from utils.errors import UserError
from utils.run.dirs import create_run_dirs

CPU = torch.device("cpu")
CONFIG = str(ROOT / "config" / "config.json")
FAST_CONFIG = str(ROOT / "config" / "fast.json")


def make_trainer(model, loader, lr=0.1, criterion=F.cross_entropy, valid=None, **options):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    config = make_config(**options)
    return build(model, criterion, optimizer, config, loader, valid)


def toy_data(n: int, features: int = 4, classes: int = 3, scale: float = 1.0):
    generator = torch.Generator().manual_seed(n)
    inputs = torch.randn(n, features, generator=generator) * scale
    return inputs, torch.randint(classes, (n,), generator=generator)


def linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(4, 3)


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


# ---------------------------------------------------------------- accumulate_steps


@pytest.mark.parametrize(("k", "b"), [(4, 3), (3, 5)])
def test_accumulation_equals_one_large_batch(k, b):
    """k accumulated batches of b give the weights of one batch of k*b, in one step."""
    inputs, targets = toy_data(k * b)
    accumulated = make_trainer(
        linear(), TensorDataLoader((inputs, targets), b, shuffle=False), accumulate_steps=k
    )
    accumulated.train(None)
    large = make_trainer(linear(), TensorDataLoader((inputs, targets), k * b, shuffle=False))
    large.train(None)
    assert accumulated.step == large.step == 1
    assert not torch.allclose(flat(large.bare_model), flat(linear()))  # it did train
    torch.testing.assert_close(flat(accumulated.bare_model), flat(large.bare_model))


def test_uneven_last_group_is_averaged_over_its_own_size():
    """5 batches with k=2: groups [b0,b1], [b2,b3], [b4]; the last loss is divided by 1."""
    batch, lr = 2, 0.1
    inputs, targets = toy_data(5 * batch)
    trainer = make_trainer(
        linear(), TensorDataLoader((inputs, targets), batch, shuffle=False), lr=lr,
        accumulate_steps=2,
    )  # fmt: skip
    trainer.train(None)
    assert trainer.step == 3

    def reference(last_divisor: int) -> torch.Tensor:
        model = linear()
        for group, divisor in (([0, 1], 2), ([2, 3], 2), ([4], last_divisor)):
            model.zero_grad()
            for i in group:
                part = slice(i * batch, (i + 1) * batch)
                (F.cross_entropy(model(inputs[part]), targets[part]) / divisor).backward()
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter -= lr * parameter.grad
        return flat(model)

    torch.testing.assert_close(flat(trainer.bare_model), reference(last_divisor=1))
    assert not torch.allclose(flat(trainer.bare_model), reference(last_divisor=2), atol=1e-5)


def test_len_epoch_counts_optimizer_steps_with_accumulation():
    """Iteration-based: len_epoch optimizer steps per epoch, each of accumulate_steps batches,
    the loader restarting when it runs out (5 batches per pass here)."""
    calls = []

    def criterion(output, target):
        calls.append(len(target))
        return F.cross_entropy(output, target)

    loader = TensorDataLoader(toy_data(10), 2, shuffle=True)
    trainer = make_trainer(linear(), loader, criterion=criterion, epochs=2, len_epoch=2,
                           accumulate_steps=3)  # fmt: skip
    trainer.train(None)
    assert trainer.step == 4
    assert len(calls) == 2 * 2 * 3


# ---------------------------------------------------------------- clip_grad_norm


def zero_linear() -> nn.Linear:
    model = nn.Linear(4, 3)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    return model


@pytest.mark.parametrize("amp", [False, "fp16"])
def test_clip_grad_norm_bounds_the_update(amp):
    """One SGD step (lr 1, weights 0): the update is minus the gradient, clipped to total norm
    c. Under fp16 this also proves clipping sees unscaled gradients (else it would clip the
    65536x scaled ones and the step would be c / 65536)."""
    clip, lr = 0.01, 1.0
    inputs, targets = toy_data(8, scale=0.1)  # small inputs: scaled fp16 gradients stay finite
    model = zero_linear()
    F.cross_entropy(model(inputs), targets).backward()
    gradient = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert gradient.norm() > 10 * clip

    updates = {}
    for clip_grad_norm in (clip, None):
        loader = TensorDataLoader((inputs, targets), 8, shuffle=False)
        trainer = make_trainer(zero_linear(), loader, lr=lr, amp=amp, clip_grad_norm=clip_grad_norm)
        trainer.train(None)
        assert trainer.step == 1
        if amp == "fp16":
            assert trainer.updates.scaler.get_scale() == 65536.0  # the step was not skipped
        updates[clip_grad_norm] = flat(trainer.bare_model)  # minus the update: weights were 0
    tolerance = {"rtol": 2e-2, "atol": 1e-5} if amp else {}
    torch.testing.assert_close(updates[clip].norm() / lr, torch.tensor(clip), rtol=1e-3, atol=0)
    torch.testing.assert_close(updates[clip], -lr * clip * gradient / gradient.norm(), **tolerance)
    torch.testing.assert_close(updates[None], -lr * gradient, **tolerance)


# ---------------------------------------------------------------- amp


class DtypeRecorder(nn.Module):
    """A Linear model that records the dtype its layer computes in."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.dtypes: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.fc(x)
        self.dtypes.append(output.dtype)
        return output


@pytest.mark.parametrize(
    ("amp", "dtype"),
    [(False, torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)],
)
def test_amp_autocasts_training_and_validation(amp, dtype):
    torch.manual_seed(0)
    model = DtypeRecorder()
    before = flat(model).clone()
    data = toy_data(12)
    trainer = make_trainer(model, TensorDataLoader(data, 4, shuffle=True), amp=amp,
                           valid=TensorDataLoader(data, 6, shuffle=False))  # fmt: skip
    trainer.train(None)
    assert model.dtypes == [dtype] * (3 + 2)  # 3 training batches, 2 validation batches
    log = trainer.epoch_log
    assert torch.isfinite(torch.tensor(log["loss"]))
    assert not torch.equal(flat(model), before)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
    scaler = trainer.state_dict()["scaler"]
    if amp == "fp16":
        assert trainer.updates.scaler.is_enabled()
        assert isinstance(scaler, dict) and scaler["scale"] > 0
    else:
        assert not trainer.updates.scaler.is_enabled()
        assert scaler is None


def fp16_trainer(**options) -> Trainer:
    return make_trainer(linear(), TensorDataLoader(toy_data(12), 4), amp="fp16", **options)


def test_scaler_state_is_checkpointed_and_restored(tmp_path: Path):
    """A saved fp16 scaler (here an unusual one) is restored exactly and then carries on."""
    trainer = fp16_trainer()
    trainer.train(None)
    path = tmp_path / "checkpoint.pth"
    state = trainer.state_dict()
    state["scaler"].update(scale=1024.0, _growth_tracker=7)
    save_checkpoint(state, path)
    checkpoint = load(path)  # weights_only=True

    resumed = fp16_trainer(epochs=2)
    resumed.load_state_dict(checkpoint)
    assert resumed.updates.scaler.state_dict() == checkpoint["scaler"]
    resumed.train(None)  # epoch 2: 3 more successful steps
    assert resumed.updates.scaler.get_scale() == 1024.0
    assert resumed.state_dict()["scaler"]["_growth_tracker"] == 7 + 3


def test_fp32_checkpoint_resumed_with_fp16_gets_a_fresh_scaler():
    fp32 = make_trainer(linear(), TensorDataLoader(toy_data(12), 4))
    fp32.train(None)
    state = fp32.state_dict()
    assert state["scaler"] is None
    resumed = fp16_trainer(epochs=2)
    resumed.load_state_dict(state)
    assert resumed.updates.scaler.state_dict() == torch.amp.GradScaler("cpu").state_dict()
    resumed.train(None)
    assert resumed.step == 6

    # And the other way: an fp16 checkpoint resumed in fp32 ignores the scaler.
    back = make_trainer(linear(), TensorDataLoader(toy_data(12), 4), epochs=3)
    back.load_state_dict(resumed.state_dict())
    back.train(None)
    assert back.step == 9 and back.state_dict()["scaler"] is None


@pytest.mark.slow
def test_resume_through_cli_restores_the_scaler(tmp_path: Path, shrunk_overrides):
    """train.py -r continues the checkpoint's GradScaler: an fp16 run's epoch-1 scaler is
    set to an unusual state, and the resumed run's epoch-2 scaler carries on from it."""
    result = run_script("train.py", "-c", FAST_CONFIG, *shrunk_overrides, "-o", "trainer.amp=fp16",
                        "-o", "trainer.epochs=1", "-o", "trainer.tensorboard=false")  # fmt: skip
    assert result.returncode == 0, result.stderr
    models = run_dir(tmp_path / "saved", "Mnist_LeNet_fast")
    first = load(models / "checkpoint-epoch1.pth")  # weights_only=True
    assert first["config"]["trainer"]["amp"] == "fp16"
    assert set(first["scaler"]) >= {"scale", "_growth_tracker"}
    first["scaler"].update(scale=1024.0, _growth_tracker=5)
    save_checkpoint(first, models / "checkpoint-epoch1.pth")

    result = run_script("train.py", "-r", str(models / "checkpoint-epoch1.pth"),
                        "-o", "trainer.epochs=2")  # fmt: skip
    assert result.returncode == 0, result.stderr
    second = load(models / "checkpoint-epoch2.pth")
    assert second["step"] == 6
    assert second["scaler"]["scale"] == 1024.0
    assert second["scaler"]["_growth_tracker"] == 5 + 3


# ---------------------------------------------------------------- compile


@pytest.mark.slow
def test_compile_trains_and_checkpoints_plain_weights(tmp_path: Path, monkeypatch):
    """`trainer.compile=true` on the CPU: dynamo traces the model (TORCH_LOGS shows it; a
    fixed batch size and no validation keep it to one graph, no dropout keeps inductor's RNG
    out), the weights match an eager run, and the checkpoint loads strictly into an
    uncompiled LeNet."""
    monkeypatch.setenv("TORCH_LOGS", "graph_code")
    common = [
        "-o", f"trainer.save_dir={tmp_path / 'saved'}",
        "-o", f"data_loader.args.data_dir={ROOT / 'data'}",
        "-o", "data_loader.args.batch_size=32",
        "-o", "data_loader.args.validation_split=0",
        "-o", "trainer.monitor=off",
        "-o", "trainer.epochs=1",
        "-o", "trainer.len_epoch=2",
        "-o", "trainer.tensorboard=false",
        "-o", "arch.args.dropout=0",
        "-o", "optimizer={type: SGD, args: {lr: 0.01}}",
    ]  # fmt: skip
    traced = {}
    for run_id, compiled in (("compiled", "true"), ("eager", "false")):
        result = run_script("train.py", "-c", FAST_CONFIG, *common, "--run-id", run_id,
                            "-o", f"trainer.compile={compiled}")  # fmt: skip
        assert result.returncode == 0, result.stderr
        traced[run_id] = result.stderr.count("TRACED GRAPH")
    assert traced["compiled"] >= 1 and traced["eager"] == 0
    models = tmp_path / "saved" / "models" / "Mnist_LeNet_fast"
    compiled = load(models / "compiled" / "checkpoint-epoch1.pth")
    eager = load(models / "eager" / "checkpoint-epoch1.pth")
    assert compiled["config"]["trainer"]["compile"] is True
    assert compiled["step"] == 2
    assert not [k for k in compiled["state_dict"] if k.startswith(("_orig_mod.", "module."))]
    fresh = LeNet(dropout=0)
    fresh.load_state_dict(compiled["state_dict"], strict=True)
    for name, tensor in compiled["state_dict"].items():
        torch.testing.assert_close(tensor, eager["state_dict"][name], rtol=1e-3, atol=1e-4)


def test_compile_dict_is_passed_to_torch_compile():
    """A valid mapping is accepted (compiling itself is lazy, so this costs nothing)."""
    wrapped = wrap_model(nn.Linear(2, 2), CPU, (), {"mode": "default", "dynamic": False})
    assert isinstance(wrapped, torch._dynamo.eval_frame.OptimizedModule)
    model = nn.Linear(2, 2)
    assert wrap_model(model, CPU, (), False) is model


def test_unknown_compile_argument_is_a_user_error():
    with pytest.raises(UserError, match=r"trainer\.compile.*bogus"):
        fp16_trainer(compile={"bogus": 1})


def test_unknown_compile_argument_through_cli(tmp_path: Path, shrunk_overrides):
    result = run_script("train.py", "-c", CONFIG, *shrunk_overrides,
                        "-o", "trainer.compile.bogus=1")  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "trainer.compile" in result.stderr and "bogus" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "saved").exists()  # no run directory


@pytest.mark.parametrize(
    "option", [{"mode": "bogus"}, {"backend": "no_such_backend"}, {"options": 3}]
)
def test_bad_compile_value_is_a_user_error(option):
    with pytest.raises(UserError, match=r"trainer\.compile"):
        wrap_model(nn.Linear(2, 2), CPU, (), option)


# ---------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("amp", True),
        ("amp", "fp32"),
        ("amp", "BF16"),
        ("amp", 16),
        ("amp", None),
        ("accumulate_steps", 0),
        ("accumulate_steps", -2),
        ("accumulate_steps", 2.0),
        ("accumulate_steps", True),
        ("clip_grad_norm", 0),
        ("clip_grad_norm", -1.0),
        ("clip_grad_norm", True),
        ("clip_grad_norm", "1.0"),
        ("clip_grad_norm", float("inf")),
        ("compile", "yes"),
        ("compile", 1),
        ("compile", None),
        ("channels_last", 1),
        ("cudnn_benchmark", "true"),
    ],
)
def test_bad_option_is_rejected_naming_its_key(key, value):
    with pytest.raises(UserError, match=rf"^trainer\.{key}: "):
        make_config(**{key: value})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("amp", "bf16"),
        ("amp", "fp16"),
        ("amp", False),
        ("accumulate_steps", 4),
        ("clip_grad_norm", 1),
        ("clip_grad_norm", 0.5),
        ("clip_grad_norm", None),
        ("compile", True),
        ("compile", {"mode": "max-autotune"}),
        ("channels_last", True),
        ("cudnn_benchmark", True),
    ],
)
def test_good_option_is_kept(key, value):
    assert make_config(**{key: value})["trainer"][key] == value


# ---------------------------------------------------------------- channels_last


def test_channels_last_trains_and_checkpoints_ordinary_weights(tmp_path: Path):
    torch.manual_seed(0)
    model = LeNet(in_channels=3, dropout=0)  # 3 channels: the two layouts differ
    initial = copy.deepcopy(model.state_dict())
    images = torch.randn(16, 3, 28, 28)
    labels = torch.randint(10, (16,))
    layouts = []
    model.conv1.register_forward_pre_hook(
        lambda _, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    loader = TensorDataLoader((images, labels), 8, shuffle=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    config = make_config(channels_last=True)
    trainer = build(model, F.nll_loss, optimizer, config, loader)
    for conv in (model.conv1, model.conv2):
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        assert not conv.weight.is_contiguous()
    # The conversion is in place: the optimizer still holds the model's parameters.
    held = optimizer.param_groups[0]["params"]
    assert all(a is b for a, b in zip(held, model.parameters(), strict=True))

    run = create_run_dirs(tmp_path, "toy")
    trainer.train(run)
    assert layouts == [True, True]  # the batches reached the convs channels-last
    checkpoint = load(run.models / "checkpoint-epoch1.pth")
    assert any(not torch.equal(checkpoint["state_dict"][k], initial[k]) for k in initial)

    ordinary = LeNet(in_channels=3, dropout=0)
    ordinary.load_state_dict(checkpoint["state_dict"], strict=True)
    assert ordinary.conv1.weight.is_contiguous()
    model.eval()
    ordinary.eval()
    with torch.no_grad():
        expected = model(images.to(memory_format=torch.channels_last))
        torch.testing.assert_close(ordinary(images), expected, rtol=1e-4, atol=1e-5)
