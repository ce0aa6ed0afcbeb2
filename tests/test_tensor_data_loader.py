"""base/tensor_data_loader.py: the in-memory loader keeps BaseDataLoader's semantics (split,
per-epoch shuffle from the run's seed, unshuffled validation, equal shares per rank)."""

from pathlib import Path

import pytest
import torch
from conftest import NARROW, ROOT, load, run_dir, run_script
from torch.utils.data import TensorDataset

import base.epoch_batches
import utils.distributed.process_group
from base.base_data_loader import BaseDataLoader
from base.epoch_batches import EpochBatches
from base.tensor_data_loader import TensorDataLoader
from data_loader.data_loaders import Mnist5kDataLoader, Mnist5kTensorDataLoader

DATA_DIR = str(ROOT / "data")


def toy_tensors(size: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    # (size, 2) inputs whose rows hold their index, and the index as target
    index = torch.arange(size)
    return torch.stack([index, -index], 1).float(), index


def targets_of(loader) -> list[int]:
    return [int(i) for _, targets in loader for i in targets]


def batches_of(loader) -> list[tuple[torch.Tensor, ...]]:
    return list(loader)


def same_batches(first, second) -> bool:
    return len(first) == len(second) and all(
        all(torch.equal(a, b) for a, b in zip(x, y, strict=True))
        for x, y in zip(first, second, strict=True)
    )


# ---------------------------------------------------------------- same split as BaseDataLoader


def cat(loader) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*loader, strict=True)
    return torch.cat(images), torch.cat(labels)


@pytest.mark.parametrize("validation_split", [0.1, 250])
def test_mnist5k_tensor_loader_holds_back_the_same_samples(validation_split):
    """Same validation images and labels, in the same order, and the same training samples."""
    plain = Mnist5kDataLoader(DATA_DIR, 500, shuffle=False, validation_split=validation_split)
    fast = Mnist5kTensorDataLoader(DATA_DIR, 500, shuffle=False, validation_split=validation_split)
    plain_valid, fast_valid = cat(plain.split_validation()), cat(fast.split_validation())
    n_valid = 400 if validation_split == 0.1 else 250
    assert len(fast_valid[1]) == n_valid
    assert torch.equal(plain_valid[0], fast_valid[0]) and torch.equal(plain_valid[1], fast_valid[1])
    plain_train, fast_train = cat(plain), cat(fast)
    assert len(fast.dataset) == len(plain.dataset) == 4000 - n_valid
    assert torch.equal(plain_train[0], fast_train[0]) and torch.equal(plain_train[1], fast_train[1])


def test_mnist5k_shuffled_epoch_is_the_same_set_of_samples():
    torch.manual_seed(0)
    plain = Mnist5kDataLoader(DATA_DIR, 1000, shuffle=True, validation_split=0.1)
    fast = Mnist5kTensorDataLoader(DATA_DIR, 1000, shuffle=True, validation_split=0.1)
    fast.set_epoch(3)

    def samples(loader) -> list[bytes]:
        images, labels = cat(loader)
        rows = torch.cat([images.flatten(1), labels.unsqueeze(1).float()], 1)
        return sorted(row.numpy().tobytes() for row in rows)

    assert samples(plain) == samples(fast)
    assert not torch.equal(cat(fast)[1], fast.tensors[1])  # it is shuffled


@pytest.mark.parametrize("split_seed", [0, 3])
def test_split_seed_matches_base_data_loader(split_seed):
    tensors = toy_tensors(40)
    plain = BaseDataLoader(TensorDataset(*tensors), 4, validation_split=0.25, split_seed=split_seed)
    fast = TensorDataLoader(tensors, 4, validation_split=0.25, split_seed=split_seed)
    assert targets_of(fast.split_validation()) == targets_of(plain.split_validation())
    assert sorted(targets_of(fast)) == sorted(targets_of(plain))
    other = TensorDataLoader(tensors, 4, validation_split=0.25, split_seed=split_seed + 1)
    assert targets_of(other.split_validation()) != targets_of(fast.split_validation())


# ---------------------------------------------------------------- epochs and shuffling


def test_each_sample_once_per_epoch_in_a_new_order():
    loader = TensorDataLoader(toy_tensors(50), 8, shuffle=True)
    orders = []
    for epoch in (1, 2, 3):
        loader.set_epoch(epoch)
        order = targets_of(loader)
        assert sorted(order) == list(range(50))
        orders.append(order)
    assert len({tuple(order) for order in orders}) == 3
    assert orders[0] != list(range(50))
    loader.set_epoch(2)
    assert targets_of(loader) == orders[1]  # an epoch's order is fixed (a resume sees it again)


def test_inputs_and_targets_stay_paired():
    loader = TensorDataLoader(toy_tensors(30), 7, shuffle=True)
    for inputs, targets in loader:
        assert torch.equal(inputs[:, 0].long(), targets)
        assert torch.equal(inputs[:, 1].long(), -targets)


def test_same_seed_gives_same_batches_and_leaves_the_global_generator_alone():
    torch.manual_seed(7)
    first = TensorDataLoader(toy_tensors(50), 8, shuffle=True)
    torch.manual_seed(7)
    second = TensorDataLoader(toy_tensors(50), 8, shuffle=True)
    torch.manual_seed(8)
    third = TensorDataLoader(toy_tensors(50), 8, shuffle=True)
    for epoch in (1, 2):
        for loader in (first, second, third):
            loader.set_epoch(epoch)
        state = torch.get_rng_state()
        batches = batches_of(first)
        assert torch.equal(torch.get_rng_state(), state)  # iterating draws nothing globally
        assert same_batches(batches, batches_of(second))
        assert not same_batches(batches, batches_of(third))


def test_validation_loader_is_unshuffled_and_complete():
    loader = TensorDataLoader(toy_tensors(50), 8, shuffle=True, validation_split=0.2)
    valid = loader.split_validation()
    assert valid.sampler.shuffle is False
    first = targets_of(valid)
    valid.set_epoch(5)
    torch.manual_seed(123)
    assert targets_of(valid) == first == sorted(first)
    assert len(first) == 10 == len(valid.dataset)
    assert sorted(first + targets_of(loader)) == list(range(50))
    assert TensorDataLoader(toy_tensors(50), 8).split_validation() is None


def test_unshuffled_loader_keeps_the_order():
    assert targets_of(TensorDataLoader(toy_tensors(13), 4, shuffle=False)) == list(range(13))


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize(("size", "batch_size"), [(20, 4), (21, 4), (3, 4), (4, 4), (1, 1)])
def test_len_matches_the_batches(size, batch_size, drop_last):
    loader = TensorDataLoader(toy_tensors(size), batch_size, drop_last=drop_last)
    sizes = [len(targets) for _, targets in loader]
    assert len(loader) == len(sizes)
    full, rest = divmod(size, batch_size)
    assert sizes == [batch_size] * full + ([rest] if rest and not drop_last else [])
    seen = targets_of(loader)
    assert len(set(seen)) == len(seen)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "4", None])
def test_bad_batch_size_raises(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        TensorDataLoader(toy_tensors(), batch_size)


def test_tensors_of_different_lengths_raise():
    with pytest.raises(ValueError, match="first dimension"):
        TensorDataLoader((torch.zeros(5, 2), torch.zeros(4)), 2)


# ---------------------------------------------------------------- sharding under torchrun


def simulate_rank(monkeypatch, rank: int, n_ranks: int) -> None:
    """What torchrun would make `rank()` and `world_size()` say, where they are looked up."""
    monkeypatch.setattr(utils.distributed.process_group, "rank", lambda: rank)
    monkeypatch.setattr(utils.distributed.process_group, "world_size", lambda: n_ranks)
    monkeypatch.setattr(base.epoch_batches, "world_size", lambda: n_ranks)


@pytest.mark.parametrize(
    ("size", "n_ranks", "batch_size", "drop_last"),
    [(11, 2, 4, False), (10, 2, 5, False), (10, 3, 2, False), (23, 4, 3, True)],
)
def test_ranks_share_an_epoch(monkeypatch, size, n_ranks, batch_size, drop_last):
    """Equal counts per rank, disjoint apart from the wrap-around padding, covering all."""
    torch.manual_seed(0)
    loader = TensorDataLoader(toy_tensors(size), batch_size, drop_last=drop_last)
    loader.set_epoch(4)
    per_rank = -(-size // n_ranks)
    shares = []
    for rank in range(n_ranks):
        simulate_rank(monkeypatch, rank, n_ranks)
        sizes = [len(targets) for _, targets in loader]
        n_batches = per_rank // batch_size if drop_last else -(-per_rank // batch_size)
        assert len(loader) == len(sizes) == n_batches
        assert min(sizes) > 0
        share = targets_of(loader)
        assert len(share) == (n_batches * batch_size if drop_last else per_rank)
        shares.append(share)
    if drop_last:
        return
    seen = [i for share in shares for i in share]
    assert set(seen) == set(range(size))
    assert len(seen) - len(set(seen)) == per_rank * n_ranks - size  # only the padding repeats


@pytest.mark.parametrize(
    ("saved", "ranks", "done", "group", "after", "again", "said"),
    [
        (2, 1, 3, 1, 6, 0, "saved by 2 processes, each 3 batches into this pass over the data; "
                           "with 1, it goes on after 6"),
        (3, 2, 4, 1, 6, 0, "saved by 3 processes, each 4 batches into this pass over the data; "
                           "with 2, each goes on after 6"),
        (1, 2, 5, 1, 2, 1, "saved by 1 process, 5 batches into this pass over the data; with 2, "
                           "each goes on after 2 (the samples of 1 batch before that are "
                           "trained again)"),
        (2, 3, 4, 1, 2, 2, "saved by 2 processes, each 4 batches into this pass over the data; "
                           "with 3, each goes on after 2 (the samples of 2 batches before "
                           "that are trained again)"),
        (1, 2, 10, 2, 4, 2, "saved by 1 process, 10 batches into this pass over the data; with "
                            "2, each goes on after 4 (the samples of 2 batches before that are "
                            "trained again)"),
    ],
)  # fmt: skip
def test_a_position_saved_by_other_ranks_goes_on_with_the_samples_not_trained(
    monkeypatch, caplog, saved, ranks, done, group, after, again, said
):
    """`done` batches of each of `saved` ranks are the epoch order's first done x saved
    batches: with `ranks`, each goes on after that many over `ranks` (rounded down to whole
    batches and accumulation groups), so no sample of the epoch is left out, and only those
    of the rounded-off batches are trained twice."""
    torch.manual_seed(0)
    size, batch_size = 36, 2  # (36 divides evenly among 1, 2 and 3 ranks: no padding)
    loader = TensorDataLoader(toy_tensors(size), batch_size)

    def trained(n_ranks: int, skip: int, first: int | None = None) -> list[int]:
        samples = []
        for rank in range(n_ranks):
            simulate_rank(monkeypatch, rank, n_ranks)
            loader.set_epoch(3, skip_batches=skip)
            samples += [int(i) for _, targets in list(loader)[:first] for i in targets]
        return samples

    before = trained(saved, 0, first=done)
    simulate_rank(monkeypatch, 0, ranks)
    position = {"batches_done": done, "passes": 0, "pass_batches": 0, "world_size": saved}
    caplog.set_level("WARNING")
    moved = EpochBatches(loader).in_this_world(position, group)
    assert moved == {**position, "batches_done": after, "world_size": ranks}
    rest = trained(ranks, after)
    assert set(before) | set(rest) == set(range(size))
    assert len(before) + len(rest) - size == again * batch_size
    (record,) = caplog.records
    assert record.getMessage() == f"the checkpoint was {said}"
    assert EpochBatches(loader).in_this_world({**position, "world_size": ranks}, group) == {
        **position, "world_size": ranks
    }  # fmt: skip


def test_validation_is_shared_between_ranks_too(monkeypatch):
    loader = TensorDataLoader(toy_tensors(40), 4, validation_split=10)
    valid = loader.split_validation()
    whole = targets_of(valid)
    shares = []
    for rank in (0, 1):
        simulate_rank(monkeypatch, rank, 2)
        shares.append(targets_of(valid))
    assert len(shares[0]) == len(shares[1]) == 5
    assert sorted(shares[0] + shares[1]) == whole


# ---------------------------------------------------------------- the shipped fast config


@pytest.mark.slow
def test_fast_config_trains_and_resumes_exactly(tmp_path: Path, shrunk_overrides):
    """config/fast.json (the in-memory loader) trains end to end, and resuming after epoch 1
    gives the uninterrupted run's weights: each epoch's shuffle is the one it would have had."""
    whole_epochs = [
        "-o", "trainer.len_epoch=null",
        "-o", "data_loader.args.batch_size=600",
        "-o", "trainer.tensorboard=false",
        "-o", NARROW,
    ]  # fmt: skip
    config = str(ROOT / "config" / "fast.json")
    result = run_script("train.py", "-c", config, *shrunk_overrides, *whole_epochs)
    assert result.returncode == 0, result.stderr
    models = run_dir(tmp_path / "saved", "Mnist_LeNet_fast")
    uninterrupted = load(models / "checkpoint-epoch2.pth")
    assert uninterrupted["config"]["data_loader"]["type"] == "Mnist5kTensorDataLoader"
    assert uninterrupted["step"] == 2 * 6  # 3,600 training images / 600
    assert (models / "model_best.pth").exists()  # val_loss was logged and monitored
    (models / "checkpoint-epoch2.pth").unlink()

    result = run_script("train.py", "-r", str(models / "checkpoint-epoch1.pth"))
    assert result.returncode == 0, result.stderr
    resumed = load(models / "checkpoint-epoch2.pth")
    assert resumed["step"] == uninterrupted["step"]
    for name, tensor in uninterrupted["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name
