"""`trainer.strategy: fsdp` on the CPU (gloo, 2 processes): it trains what DDP trains, its
checkpoint is one plain file of full tensors that resumes bit for bit at the same world size
and loads in one process; what it cannot serve is refused in one line."""

import shutil

import pytest
import torch
from conftest import TORCHRUN, assert_same_run, ended, load, read_json, run_dir, run_script
from test_job import TWO_RANKS, options, reference  # noqa: F401 (a fixture)

from base.sharding import strategy_problem
from model.model import LeNet


@pytest.mark.slow
def test_fsdp_trains_what_ddp_trains_and_its_checkpoint_is_plain_and_resumes(
    tmp_path,
    reference,  # noqa: F811
) -> None:
    save_dir = tmp_path / "saved"
    fsdp = [*options(save_dir), "-o", "trainer.strategy=fsdp"]
    result = ended([*TORCHRUN, *TWO_RANKS, "train.py", *fsdp])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FSDP world size 2" in result.stdout
    models = run_dir(save_dir)
    final = load(models / "checkpoint-epoch2.pth")
    assert final["arch"] == "LeNet" and final["step"] == reference["step"]
    # The same model as DDP's: two ranks sum their gradients in one order either way.
    for name, tensor in reference["state_dict"].items():
        assert torch.allclose(final["state_dict"][name], tensor, rtol=0, atol=1e-6), name
    # Plain and full: the weights load into a LeNet, the optimizer's state into a plain Adam.
    assert all(type(t) is torch.Tensor for t in final["state_dict"].values())
    plain = LeNet(width=8)  # NARROW
    plain.load_state_dict(final["state_dict"])
    adam = torch.optim.Adam(plain.parameters(), amsgrad=True)
    adam.load_state_dict(final["optimizer"])
    assert adam.state[plain.fc2.weight]["exp_avg"].shape == plain.fc2.weight.shape

    # Resumed from the middle of epoch 2 with 2 ranks: bit for bit.
    shutil.copytree(save_dir, tmp_path / "copy")
    copy = run_dir(tmp_path / "copy")
    (middle,) = [p for p in copy.glob("checkpoint-step*.pth") if load(p)["step"] == 57]
    result = ended([*TORCHRUN, *TWO_RANKS, "train.py", "-r", str(middle), "-d", "cpu"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming in epoch 2 of 2, after 27 of its 30 batches" in result.stdout
    assert_same_run(load(copy / "checkpoint-epoch2.pth"), final)

    # One process: test.py, and a resume without FSDP (the strategy set to null).
    result = run_script("test.py", "-r", str(models / "checkpoint-epoch2.pth"))
    assert result.returncode == 0, result.stderr
    assert read_json(models / "checkpoint-epoch2.test_metrics.json")["step"] == final["step"]
    result = run_script("train.py", "-r", str(models), "-o", "trainer.epochs=3", "-d", "cpu",
                        "-o", "trainer.strategy=null", "-o", "trainer.len_epoch=2")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert load(models / "checkpoint-epoch3.pth")["step"] == final["step"] + 2


@pytest.mark.parametrize(
    ("settings", "refusal"),
    [
        ({"amp": "fp16"}, "trainer.amp: trainer.strategy 'fsdp' cannot serve fp16"),
        ({"compile": True}, "trainer.compile: trainer.strategy 'fsdp' cannot serve compiling"),
        ({"model_names": ["generator", "discriminator"]}, "arch: trainer.strategy 'fsdp' cannot"),
        ({"hooks": ["EMA"]}, "trainer.hooks: trainer.strategy 'fsdp' cannot serve EMA"),
    ],
)
def test_what_fsdp_cannot_serve_is_named(settings: dict, refusal: str) -> None:
    usual = {"amp": "bf16", "compile": False, "model_names": ["model"], "hooks": ["Checkpointer"]}
    assert strategy_problem("fsdp", True, **usual) is None
    assert strategy_problem("fsdp", True, **{**usual, **settings}).startswith(refusal)
    assert strategy_problem("ddp", True, **{**usual, **settings}) is None
