"""The GAN example (`config/gan.json`, `GANTrainer`): two models train through the CLI, their
checkpoint holds both, a resumed run ends bit for bit where an uninterrupted one ends,
test.py refuses a trainer without validation, and the parts of the framework that only a
run of several models meets (named nodes in the trial step, a gradient norm per optimizer)."""

import shutil
from pathlib import Path

import pytest
import torch
from conftest import ROOT, assert_same_run, epoch_lines, load, run_dir, run_script, shrunk
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_cli_errors import assert_refused, run_in_process
from test_tensorboard import read_events
from test_trial_step import assert_trial_undone, overrides

import train
from builder import build_trainer, trainer_keys
from model.gan import Generator
from utils.config.check import apply_overrides, load_config_file, resolve_config
from utils.errors import UserError
from utils.run.dirs import create_run_dirs

CONFIG = str(ROOT / "config" / "gan.json")
NAME = "Mnist_GAN"
MODELS = {"generator", "discriminator"}


def options(save_dir: Path, *extra: str) -> list[str]:
    """The GAN config shrunk to epochs of 3 batches of 32, on the CPU, outputs in `save_dir`."""
    settings = [
        f"trainer.save_dir={save_dir}", "trainer.epochs=2", "trainer.len_epoch=3",
        "trainer.progress_bar=false", f"data_loader.args.data_dir={ROOT / 'data'}",
        "data_loader.args.batch_size=32", *extra,
    ]  # fmt: skip
    return [item for setting in settings for item in ("-o", setting)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of 2 shrunk epochs of the GAN config, trained through train.py."""
    save_dir = tmp_path_factory.mktemp("gan") / "saved"
    result = run_script("train.py", "-c", CONFIG, *options(save_dir))
    assert result.returncode == 0, result.stderr
    return run_dir(save_dir, NAME)


def test_gan_config_trains_and_checkpoints_both_models_by_name(trained: Path) -> None:
    state = load(trained / "checkpoint-epoch2.pth")  # weights_only=True: tensors and plain data
    assert (state["epoch"], state["step"]) == (2, 6)
    assert state["arch"] == {"generator": "Generator", "discriminator": "Discriminator"}
    for key in ("state_dict", "optimizer", "lr_scheduler"):
        assert set(state[key]) == MODELS, key
    assert state["state_dict"]["generator"]["net.0.weight"].shape == (256, 64)
    assert state["state_dict"]["discriminator"]["net.1.weight"].shape == (256, 28 * 28)
    for name in MODELS:
        assert state["optimizer"][name]["state"], f"{name}'s optimizer took no step"
        assert state["lr_scheduler"][name]["last_epoch"] == 2


def test_generated_samples_are_logged_to_tensorboard_each_epoch(trained: Path) -> None:
    log_dir = trained.parent.parent.parent / "log" / NAME / trained.name
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0}).Reload()
    assert [event.step for event in events.Images("samples/generated")] == [3, 6]


def test_each_model_gets_gradients_only_from_its_own_loss() -> None:
    """The discriminator's gradients are those of `d_loss` alone (none from the generator's
    loss), the generator's those of `g_loss` alone, and the discriminator is trainable after."""
    raw = apply_overrides(load_config_file(CONFIG), [f"data_loader.args.data_dir={ROOT / 'data'}"])
    trainer = build_trainer(resolve_config(raw, trainer_keys), torch.device("cpu"))
    generator = trainer.bare_models["generator"]
    discriminator = trainer.bare_models["discriminator"]
    real, labels = next(iter(trainer.batches.data_loader))  # (B, 1, 28, 28), (B,)
    trainer.updates.group_end = False  # mid accumulation: no optimizer step, gradients stay
    torch.manual_seed(0)
    trainer.train_step((real, labels))

    torch.manual_seed(0)
    noise = torch.randn(len(real), generator.latent_dim)  # the noise train_step drew
    fake = generator(noise)
    is_real = torch.cat([torch.ones(len(real)), torch.zeros(len(real))])
    d_loss = trainer.criterion(discriminator(torch.cat([real, fake.detach()])), is_real)
    g_loss = trainer.criterion(discriminator(fake), is_real[: len(real)])
    expected_d = torch.autograd.grad(d_loss, list(discriminator.parameters()))
    expected_g = torch.autograd.grad(g_loss, list(generator.parameters()))
    for parameter, expected in zip(discriminator.parameters(), expected_d, strict=True):
        assert parameter.requires_grad
        torch.testing.assert_close(parameter.grad, expected)
    for parameter, expected in zip(generator.parameters(), expected_g, strict=True):
        torch.testing.assert_close(parameter.grad, expected)


@pytest.mark.slow
def test_gan_resumed_from_a_step_checkpoint_ends_bit_for_bit_like_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    """Step checkpoints every 2 steps of 3-step epochs put step 8 in the middle of epoch 3.
    Resumed from it, the run ends with the uninterrupted run's weights, optimizers, schedulers
    (both models' of each), hooks and random generators, and logs epoch 3 with the same means."""
    settings = options(tmp_path / "saved", "trainer.epochs=3", "trainer.save_every_steps=2")
    result = run_script("train.py", "-c", CONFIG, *settings)
    assert result.returncode == 0, result.stderr
    uninterrupted_epoch_3 = epoch_lines(result.stdout)["3/3"]
    models = run_dir(tmp_path / "saved", NAME)
    uninterrupted = load(models / "checkpoint-epoch3.pth")
    assert uninterrupted["step"] == 9

    state = load(models / "checkpoint-step8.pth")
    assert (state["step"], state["epoch"], state["batches_done"]) == (8, 2, 2)
    shutil.copytree(tmp_path / "saved", tmp_path / "resumed")
    copy = run_dir(tmp_path / "resumed", NAME)
    result = run_script("train.py", "-r", str(copy / "checkpoint-step8.pth"), *settings)
    assert result.returncode == 0, result.stderr
    assert_same_run(load(copy / "checkpoint-epoch3.pth"), uninterrupted)
    assert epoch_lines(result.stdout)["3/3"] == uninterrupted_epoch_3


def test_test_script_refuses_a_gan_checkpoint_in_one_line(trained: Path) -> None:
    result = run_script("test.py", "-r", str(trained / "checkpoint-epoch2.pth"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "GANTrainer has no validation_step" in result.stderr
    # So the end of its training run offers no command to evaluate it, only one to go on.
    log = (trained.parents[2] / "log" / NAME / trained.name / "info.log").read_text()
    assert "to train longer" in log and "to evaluate" not in log


def test_the_trainer_takes_no_metrics(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    config = {**load_config_file(CONFIG), "metrics": ["accuracy"]}
    with pytest.raises(UserError, match="metrics: GANTrainer takes no metrics"):
        build_trainer(resolve_config(config, trainer_keys), torch.device("cpu"))


def test_the_trial_step_of_both_models_is_undone() -> None:
    assert_trial_undone(CONFIG, [])


def test_a_named_node_of_the_trial_step_is_named(tmp_path: Path, capsys) -> None:
    save_dir = tmp_path / "saved"
    argv = ["-c", CONFIG, *shrunk(save_dir), "-o", "trainer.len_epoch=1",
            *overrides("lr_scheduler.discriminator.args.step_size=0")]  # fmt: skip
    assert_refused(train.main, argv, capsys, "lr_scheduler.discriminator: StepLR.step")
    assert not (save_dir / "models").exists()


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("arch.generator.args.latent_dim=0",
         "arch.generator.args.latent_dim: 0 is not valid for Generator: input should be greater "
         "than 0"),
        ("arch.discriminator.args.hidden=0",
         "arch.discriminator.args.hidden: 0 is not valid for Discriminator"),
        ("trainer.hooks=[{type: GeneratedSamples, args: {seed: 1.5}}]",
         "trainer.hooks[0].args.seed: 1.5 is not valid for GeneratedSamples: input should be a "
         "valid integer"),
        ("trainer.hooks=[{type: GeneratedSamples, args: {n_samples: 1000000000}}]",
         "trainer.hooks[0].args.n_samples: 1000000000 is not valid for GeneratedSamples: input "
         "should be less than or equal to 1024"),
        # The discriminator steps before the generator's loss is known: a skipped update would
        # be half made (and, with fp16, the next step raised: its scaler was never updated).
        # It watches the monitored value, else val_loss, else loss: the GAN logs none of them.
        ("lr_scheduler={type: ReduceLROnPlateau, args: {}}",
         "lr_scheduler: ReduceLROnPlateau watches trainer.monitor, else val_loss, else loss, and "
         "this run logs neither (d_loss, g_loss, d_real, d_fake); set trainer.monitor to one"),
        ("trainer.on_nonfinite=skip",
         "trainer.on_nonfinite: 'skip' drops a whole update, but GANTrainer's optimizers step "
         "in turn, one before the next one's loss is known; use 'stop' or null"),
    ],
)  # fmt: skip
def test_bad_gan_arguments_are_refused_before_the_run_directory(
    tmp_path: Path, capsys, override: str, fragment: str
) -> None:
    """Each of these used to train an epoch, or to fail once the run directory existed."""
    save_dir = tmp_path / "saved"
    argv = ["-c", CONFIG, *shrunk(save_dir), *overrides(override)]
    assert_refused(train.main, argv, capsys, fragment)
    assert not save_dir.exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("arch.generator.args.latent_dim=32.0",
         "arch.generator.args.latent_dim: 32.0 is a float; Generator takes int > 0 here"),
        ("arch={generator: {type: Generator, args: {}}}",
         "arch: GANTrainer trains the models ['generator', 'discriminator'], but the config "
         "names ['generator']; give arch a node for each of them"),
    ],
)  # fmt: skip
def test_a_mistake_in_arch_is_the_only_problem_named(tmp_path, capsys, override, message):
    """The optimizers and schedulers, checked on stand-ins where arch failed, are checked on
    stand-ins of the trainer's models: before, they were told the models were ['model']."""
    argv = ["-c", CONFIG, *shrunk(tmp_path / "saved"), *overrides(override)]
    code, stderr = run_in_process(train.main, argv, capsys)
    assert (code, stderr) == (2, f"error: {message}\n")


def test_a_null_schedule_leaves_that_model_unscheduled_and_resumes(tmp_path, capsys) -> None:
    """`lr_scheduler.discriminator: null`: only the generator's rate decays (StepLR of step
    size 1 here), the checkpoint holds its schedule alone, and the run resumes."""
    schedules = overrides("lr_scheduler.generator.args.step_size=1",
                          "lr_scheduler.discriminator=null")  # fmt: skip
    result = run_script("train.py", "-c", CONFIG, *shrunk(tmp_path), *schedules)
    assert result.returncode == 0, result.stderr
    models = run_dir(tmp_path, NAME)
    assert set(load(models / "checkpoint-epoch2.pth")["lr_scheduler"]) == {"generator"}
    resumed = run_script("train.py", "-r", str(models), "-o", "trainer.epochs=3")
    assert resumed.returncode == 0, resumed.stderr
    rows = (tmp_path / "log" / NAME / models.name / "metrics.csv").read_text().splitlines()
    rates = [row.split(",")[-2:] for row in rows[1:]]  # lr_generator, lr_discriminator
    assert [float(g) for g, _ in rates] == pytest.approx([1e-4, 5e-5, 2.5e-5])  # (after each epoch)
    assert {float(d) for _, d in rates} == {2e-4}
    one_only = "lr_scheduler={generator: {type: StepLR, args: {step_size: 1}}}"
    argv = ["-c", CONFIG, *shrunk(tmp_path / "other"), *overrides(one_only)]
    assert_refused(train.main, argv, capsys, "lr_scheduler: names ['generator'] do not match "
                   "the models ['generator', 'discriminator']; give a node (or null: no "
                   "schedule) for each")  # fmt: skip


def test_samples_of_a_generator_of_other_data_are_refused_before_the_run_directory(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """A generator of 1-D signals (B, 1, 784): the hook failed in TensorBoard after the first
    epoch, before the epoch's checkpoint."""
    monkeypatch.setattr(Generator, "forward", lambda self, z: self.net(z).view(-1, 1, 784))
    save_dir = tmp_path / "saved"
    hooks = "trainer.hooks=[{type: GeneratedSamples, args: {n_samples: 4}}]"
    argv = ["-c", CONFIG, *shrunk(save_dir), *overrides(hooks)]
    assert_refused(train.main, argv, capsys, "trainer.hooks[0]: GeneratedSamples draws what "
                   "the generator makes as images, (N, C, H, W) with 1, 3 or 4 channels, and it "
                   "makes (2, 1, 784); leave the hook out for other data")  # fmt: skip
    assert not save_dir.exists()


def test_each_optimizer_of_a_gan_has_its_gradient_norm(tmp_path: Path) -> None:
    overrides = [f"data_loader.args.data_dir={ROOT / 'data'}", "data_loader.args.batch_size=8",
                 "trainer.epochs=1", "trainer.len_epoch=2", "trainer.log_step=1",
                 "trainer.progress_bar=false", f"trainer.save_dir={tmp_path}"]  # fmt: skip
    raw = apply_overrides(load_config_file(CONFIG), overrides)
    trainer = build_trainer(resolve_config(raw, trainer_keys), torch.device("cpu"))
    run = create_run_dirs(tmp_path, "gan", "run")
    trainer.train(run)
    tags = {tag for tag in read_events(run).Tags()["scalars"] if "grad_norm" in tag}
    assert tags == {"train/grad_norm_generator", "train/grad_norm_discriminator"}
