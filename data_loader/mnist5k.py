"""The bundled 5,000-image MNIST subset (see data/README.md), split once into train and test."""

import gzip
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from utils.errors import UserError

FILE_NAME = "mnist_5k.csv.gz"
TEST_PER_CLASS = 100  # 10 classes x 100 = the 1,000-image test split
SPLIT_SEED = 0  # fixed forever: changing it would move images between train and test
MEAN, STD = 0.1307, 0.3081  # pixel statistics of the full MNIST training set


def load_mnist5k(data_dir: str | Path, training: bool) -> TensorDataset:
    """Images (N, 1, 28, 28) normalised float32 and labels (N,) int64 of one split.

    The test split holds `TEST_PER_CLASS` images of each digit chosen by `SPLIT_SEED`;
    the training split is everything else, so the two never overlap.
    """
    path = Path(data_dir) / FILE_NAME
    try:
        with gzip.open(path, "rt") as file:
            text = file.read()
    except OSError as error:
        raise UserError(
            f"data_loader.args.data_dir: cannot read {path} ({error.strerror or error}); "
            "it ships with the template in data/"
        ) from None
    # (5000, 785): 784 pixels then the label per row
    table = np.fromstring(text.replace("\n", ","), dtype=np.uint8, sep=",").reshape(-1, 785)
    pixels, labels = (
        torch.from_numpy(table[:, :-1]),
        torch.from_numpy(table[:, -1].astype(np.int64)),
    )
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    for digit in range(10):
        members = torch.nonzero(labels == digit).flatten()
        chosen = members[torch.randperm(len(members), generator=generator)[:TEST_PER_CLASS]]
        is_test[chosen] = True
    keep = is_test if not training else ~is_test
    images = (pixels[keep].float().div(255).sub(MEAN).div(STD)).view(-1, 1, 28, 28)
    return TensorDataset(images, labels[keep])
