"""trainer/trainer.py, the supervised Trainer, on the shared loop: batches of any shape, and
where a non-finite stop leaves the epoch."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import load, make_trainer
from conftest import toy_config as config
from torch import nn

from base import TensorDataLoader
from utils.errors import TrainingFailed
from utils.run.dirs import create_run_dirs


class TwoInputs(nn.Module):
    """A multi-input model: features (B, 4) and a sequence (B, T, 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Linear(4, 3)
        self.sequence = nn.GRU(2, 3, batch_first=True)

    def forward(self, features: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor:
        _, last = self.sequence(sequence)  # (1, B, 3)
        return self.features(features) + last[0]  # (B, 3)


class DictLoader:
    """A loader of `({"features": ..., "sequence": ...}, target)` batches (the EpochLoader
    contract, nothing more)."""

    def __init__(self, tensors: TensorDataLoader) -> None:
        self.tensors = tensors

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.tensors.set_epoch(epoch, skip_batches)

    def split_validation(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self.tensors)

    def __iter__(self):
        for features, sequence, target in self.tensors:
            yield {"features": features, "sequence": sequence}, target


class TupleLoader(DictLoader):
    """The same batches as `((features, sequence), target)`."""

    def __iter__(self):
        for features, sequence, target in self.tensors:
            yield (features, sequence), target


def toy_tensors(n: int = 12):
    generator = torch.Generator().manual_seed(0)
    features, sequence = torch.randn(n, 4, generator=generator), torch.randn(n, 5, 2)
    return features, sequence, torch.randint(3, (n,), generator=generator)


def test_tuple_and_dict_inputs_reach_a_multi_input_model(tmp_path: Path) -> None:
    features, sequence, target = toy_tensors()
    results = {}
    for kind in ("tuple", "dict"):
        torch.manual_seed(0)
        model = TwoInputs()
        tensors = TensorDataLoader((features, sequence, target), 4, shuffle=False)
        loader = DictLoader(tensors) if kind == "dict" else TupleLoader(tensors)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        trainer = make_trainer(model, F.cross_entropy, optimizer, config(tensorboard=True),
                               loader)  # fmt: skip
        trainer.train(create_run_dirs(tmp_path, kind))
        assert trainer.step == 3
        results[kind] = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.testing.assert_close(results["tuple"], results["dict"], rtol=0, atol=0)


def test_tabular_input_trains_with_tensorboard_on_and_logs_no_image(tmp_path: Path) -> None:
    """(B, F) inputs once crashed the run: the input was always logged as an image grid."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    features, _, target = toy_tensors()
    model = nn.Linear(4, 3)
    loader = TensorDataLoader((features, target), 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = create_run_dirs(tmp_path, "tabular")
    make_trainer(model, F.cross_entropy, optimizer, config(tensorboard=True), loader).train(run)
    events = EventAccumulator(str(run.log)).Reload()
    assert events.Tags()["images"] == []
    assert "epoch/loss" in events.Tags()["scalars"]


class NaNOnCall:
    """cross_entropy, but the loss of the `bad`-th call (counting from 0) is NaN."""

    def __init__(self, bad: int | None) -> None:
        self.bad, self.calls = bad, 0

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(output, target)
        self.calls += 1
        return loss * float("nan") if self.calls - 1 == self.bad else loss


def nan_run(tmp_path: Path, name: str, bad: int | None, **options):
    """A linear model on 5 unshuffled batches of 4, the `bad`-th loss NaN."""
    torch.manual_seed(0)
    features, _, target = toy_tensors(20)
    model = nn.Linear(4, 3)
    loader = TensorDataLoader((features, target), 4, shuffle=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = make_trainer(model, NaNOnCall(bad), optimizer, config(on_nonfinite="stop",
                           **options), loader)  # fmt: skip
    return trainer, create_run_dirs(tmp_path, name, "run")


@pytest.mark.parametrize(
    ("options", "bad", "saved_step"),
    [
        ({"accumulate_steps": 2}, 3, 1),  # batches 2-3 form the bad group
        # 9 batches an epoch over a 5-batch loader, groups of 3: the group of batches 3-5
        # crosses into the loader's second pass, where the bad one is.
        ({"accumulate_steps": 3, "len_epoch": 3, "epochs": 2}, 5, 1),
    ],
)
def test_a_nonfinite_stop_resumes_counting_each_batch_once(tmp_path, options, bad, saved_step):
    """The stop rewinds to the start of the bad accumulation group (the pass position too);
    resumed with the cause gone, the run equals one that never had it, logged means included."""
    trainer, run = nan_run(tmp_path, "stopped", bad, **options)
    with pytest.raises(TrainingFailed, match="non-finite loss"):
        trainer.train(run)
    checkpoint = load(run.models / f"checkpoint-step{saved_step}.pth")
    resumed, _ = nan_run(tmp_path, "resumed", None, **options)
    resumed.load_state_dict(checkpoint)
    resumed.train(run)
    clean, clean_run = nan_run(tmp_path, "clean", None, **options)
    clean.train(clean_run)
    assert resumed.step == clean.step
    assert resumed.epoch_log == clean.epoch_log  # each batch counted once
    for mine, theirs in zip(resumed.bare_model.parameters(), clean.bare_model.parameters(),
                            strict=True):  # fmt: skip
        assert torch.equal(mine, theirs)
