"""base/base_data_loader.py and data_loader/: the validation split and the bundled MNIST subset."""

from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from base.base_data_loader import BaseDataLoader, split_indices
from data_loader.data_loaders import Mnist5kDataLoader, MnistDataLoader
from utils.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "data"

# ---------------------------------------------------------------- split_indices


@pytest.mark.parametrize(
    ("size", "validation_split", "n_valid"),
    [(100, 0.1, 10), (100, 0.25, 25), (10, 0.0, 0), (7, 0.5, 3), (100, 30, 30), (5, 0, 0)],
)
def test_split_is_disjoint_complete_and_sized(size, validation_split, n_valid):
    train, valid = split_indices(size, validation_split, seed=0)
    assert len(valid) == n_valid
    assert len(train) == size - n_valid
    assert not set(train) & set(valid)
    assert sorted(train + valid) == list(range(size))


def test_split_fraction_is_not_lost_to_float_rounding():
    # 0.29 * 100 == 28.999999999999996 in floating point; 29% of 100 samples is 29.
    for fraction, expected in [(0.29, 29), (0.57, 57), (0.58, 58)]:
        _, valid = split_indices(100, fraction, seed=0)
        assert len(valid) == expected, fraction


def test_split_is_random_not_the_tail():
    _, valid = split_indices(1000, 0.1, seed=0)
    assert valid != list(range(900, 1000))
    assert valid != list(range(100))


def test_split_depends_on_its_seed_only():
    torch.manual_seed(1)
    first = split_indices(200, 0.2, seed=7)
    torch.manual_seed(12345)
    torch.rand(10)
    second = split_indices(200, 0.2, seed=7)
    assert first == second
    assert split_indices(200, 0.2, seed=8) != first


def test_split_leaves_global_rng_alone():
    torch.manual_seed(3)
    before = torch.get_rng_state()
    split_indices(500, 0.2, seed=0)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("validation_split", [-0.1, 1.0, 1.5, -1, 100, 101, True, "0.1", None])
def test_split_out_of_range_raises(validation_split):
    with pytest.raises(UserError, match=r"^data_loader\.args\.validation_split: .* expected a"):
        split_indices(100, validation_split, seed=0)


def test_an_empty_dataset_is_named_as_such():
    with pytest.raises(UserError, match=r"^data_loader: the dataset holds no sample"):
        split_indices(0, 0.2, seed=0)


# ---------------------------------------------------------------- BaseDataLoader


def toy_dataset(size: int = 20) -> TensorDataset:
    # (size, 1) inputs whose value is their index, so batches show which samples they hold
    return TensorDataset(torch.arange(size).float().unsqueeze(1), torch.arange(size))


def indices_of(loader) -> list[int]:
    return [int(i) for _, targets in loader for i in targets]


def test_no_split_gives_no_validation_loader():
    loader = BaseDataLoader(toy_dataset(), batch_size=4, shuffle=False)
    assert loader.split_validation() is None
    assert indices_of(loader) == list(range(20))


def test_split_sizes_and_disjoint():
    loader = BaseDataLoader(toy_dataset(), batch_size=4, validation_split=0.25)
    valid_loader = loader.split_validation()
    train = indices_of(loader)
    valid = indices_of(valid_loader)
    assert (len(train), len(valid)) == (15, 5)
    assert (len(loader.dataset), len(valid_loader.dataset)) == (15, 5)
    assert sorted(train + valid) == list(range(20))
    assert valid_loader.batch_size == 4


def test_split_by_sample_count():
    loader = BaseDataLoader(toy_dataset(), batch_size=4, validation_split=6)
    assert len(loader.split_validation().dataset) == 6
    assert len(loader.dataset) == 14


def test_validation_loader_is_not_shuffled():
    loader = BaseDataLoader(toy_dataset(50), batch_size=4, shuffle=True, validation_split=0.2)
    valid_loader = loader.split_validation()
    torch.manual_seed(0)
    first = indices_of(valid_loader)
    torch.manual_seed(1)
    second = indices_of(valid_loader)
    assert first == second == sorted(first)


def test_training_loader_shuffles_from_the_global_seed():
    loader = BaseDataLoader(toy_dataset(50), batch_size=4, shuffle=True)
    torch.manual_seed(0)
    first = indices_of(loader)
    torch.manual_seed(0)
    assert indices_of(loader) == first
    assert first != list(range(50))


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "4"])
def test_bad_batch_size_raises(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        BaseDataLoader(toy_dataset(), batch_size=batch_size)


def test_bad_num_workers_raises():
    with pytest.raises(ValueError, match="num_workers"):
        BaseDataLoader(toy_dataset(), batch_size=2, num_workers=-1)


# ---------------------------------------------------------------- the bundled MNIST subset


@pytest.fixture(scope="module")
def mnist_train() -> Mnist5kDataLoader:
    return Mnist5kDataLoader(str(DATA_DIR), batch_size=64, shuffle=False)


@pytest.fixture(scope="module")
def mnist_test() -> Mnist5kDataLoader:
    return Mnist5kDataLoader(str(DATA_DIR), batch_size=64, shuffle=False, training=False)


def test_mnist5k_split_sizes(mnist_train, mnist_test):
    assert len(mnist_train.dataset) == 4000
    assert len(mnist_test.dataset) == 1000
    assert mnist_train.split_validation() is None


def test_mnist5k_classes_balanced(mnist_train, mnist_test):
    _, test_labels = mnist_test.dataset.tensors
    _, train_labels = mnist_train.dataset.tensors
    assert torch.bincount(test_labels, minlength=10).tolist() == [100] * 10
    assert torch.bincount(train_labels, minlength=10).tolist() == [400] * 10


def test_mnist5k_train_and_test_images_do_not_overlap(mnist_train, mnist_test):
    train_images, _ = mnist_train.dataset.tensors
    test_images, _ = mnist_test.dataset.tensors
    train_rows = {row.numpy().tobytes() for row in train_images.flatten(1)}
    test_rows = {row.numpy().tobytes() for row in test_images.flatten(1)}
    assert len(test_rows) == 1000
    assert not train_rows & test_rows


def test_mnist5k_split_is_fixed(mnist_test):
    # A second load gives the very same test images, in the same order.
    again = Mnist5kDataLoader(str(DATA_DIR), batch_size=64, training=False)
    assert torch.equal(again.dataset.tensors[0], mnist_test.dataset.tensors[0])
    assert torch.equal(again.dataset.tensors[1], mnist_test.dataset.tensors[1])


def test_mnist5k_batches(mnist_train):
    images, labels = next(iter(mnist_train))
    assert images.shape == (64, 1, 28, 28)
    assert images.dtype == torch.float32
    assert labels.shape == (64,)
    assert labels.dtype == torch.int64
    assert labels.min() >= 0 and labels.max() <= 9


def test_mnist5k_images_are_normalised(mnist_train):
    images, _ = mnist_train.dataset.tensors
    assert abs(images.mean().item()) < 0.05
    assert abs(images.std().item() - 1.0) < 0.05


def test_mnist5k_validation_split():
    loader = Mnist5kDataLoader(str(DATA_DIR), batch_size=128, validation_split=0.1)
    valid_loader = loader.split_validation()
    assert len(loader.dataset) == 3600
    assert len(valid_loader.dataset) == 400
    images, labels = next(iter(valid_loader))
    assert images.shape[1:] == (1, 28, 28)
    assert labels.dtype == torch.int64


def test_mnist5k_missing_data_dir(tmp_path):
    with pytest.raises(UserError, match=r"data_loader\.args\.data_dir") as error:
        Mnist5kDataLoader(str(tmp_path / "nowhere"), batch_size=4)
    assert str(tmp_path / "nowhere") in str(error.value)


def test_full_mnist_without_download_says_how_to_get_it(tmp_path):
    with pytest.raises(UserError, match="download") as error:
        MnistDataLoader(str(tmp_path), batch_size=4, download=False)
    assert "data_loader.args" in str(error.value)
