"""The data loaders a config can name in `data_loader.type`."""

from pathlib import Path

import torch
from torch.utils.data import Dataset

from base import BaseDataLoader, TensorDataLoader
from data_loader.mnist5k import MEAN, STD, load_mnist5k
from utils.errors import UserError


class Mnist5kDataLoader(BaseDataLoader):
    """The bundled 5,000-image MNIST subset: 4,000 training images, or with `training=False`
    the 1,000-image test split. Works offline; nothing is downloaded."""

    def __init__(
        self,
        data_dir: str,
        batch_size: int,
        shuffle: bool = True,
        validation_split: float | int = 0.0,
        num_workers: int = 0,
        training: bool = True,
        pin_memory: bool | None = None,
        drop_last: bool = False,
    ) -> None:
        dataset = load_mnist5k(data_dir, training)
        super().__init__(dataset, batch_size, shuffle, validation_split, num_workers,
                         pin_memory=pin_memory, drop_last=drop_last)  # fmt: skip


class Mnist5kTensorDataLoader(TensorDataLoader):
    """The same images and splits as `Mnist5kDataLoader`, on the fast in-memory path:
    batches are cut from one tensor (on the GPU with `device_resident: true`)."""

    def __init__(
        self,
        data_dir: str,
        batch_size: int,
        shuffle: bool = True,
        validation_split: float | int = 0.0,
        training: bool = True,
        drop_last: bool = False,
        device_resident: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        dataset = load_mnist5k(data_dir, training)
        super().__init__(dataset.tensors, batch_size, shuffle, validation_split, drop_last,
                         device_resident, device=device)  # fmt: skip


class MnistDataLoader(BaseDataLoader):
    """Full MNIST (60,000 training / 10,000 test images) through torchvision.

    The files are read from `data_dir/MNIST`; they are fetched only with `download: true`.
    """

    def __init__(
        self,
        data_dir: str,
        batch_size: int,
        shuffle: bool = True,
        validation_split: float | int = 0.0,
        num_workers: int = 0,
        training: bool = True,
        download: bool = False,
        pin_memory: bool | None = None,
        drop_last: bool = False,
    ) -> None:
        dataset = _torchvision_mnist(data_dir, training, download)
        super().__init__(dataset, batch_size, shuffle, validation_split, num_workers,
                         pin_memory=pin_memory, drop_last=drop_last)  # fmt: skip


def _torchvision_mnist(data_dir: str, training: bool, download: bool) -> Dataset:
    """One split of full MNIST, normalised as the bundled subset is; missing files are an
    error that says how to get them."""
    from torchvision import datasets, transforms  # slow import, only when this loader is used

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    try:
        return datasets.MNIST(data_dir, train=training, download=download, transform=transform)
    except (RuntimeError, OSError) as error:
        where = Path(data_dir) / "MNIST"
        error = " ".join(str(error).split())  # torchvision lists one failure per line
        if download:
            raise UserError(
                f"data_loader.args.download: could not download MNIST into {where} "
                f"({error}); check the network or put the files there by hand"
            ) from None
        raise UserError(
            f"data_loader.args.data_dir: MNIST is not in {where}; "
            "set data_loader.args.download to true to fetch it"
        ) from None
