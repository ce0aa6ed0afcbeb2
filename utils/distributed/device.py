"""Choosing the device (and the GPUs for DataParallel) from `-d` and the config's `n_gpu`."""

import logging
import os

import torch

from utils.errors import UserError

logger = logging.getLogger(__name__)


def select_device(requested: str | None, n_gpu: int) -> tuple[torch.device, list[int]]:
    """The device to train on and the CUDA device ids to spread the batch over, from `-d`
    (`requested`; None: CUDA if there is one) and the config's `n_gpu` (a cap; 0: the CPU)."""
    if requested == "cpu" or (requested is None and (n_gpu == 0 or not torch.cuda.is_available())):
        return torch.device("cpu"), []
    if requested not in (None, "cuda") and not requested.startswith("cuda:"):
        ids = requested.split(",")
        if not all(part.strip().isdigit() for part in ids):
            raise UserError(
                f"-d {requested}: not a device; valid: cpu, cuda, cuda:N or a list like 0,1"
            )
        # Must happen before CUDA is first used; selects which GPUs this process sees.
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(part.strip() for part in ids)
    if not torch.cuda.is_available():
        raise UserError(f"-d {requested}: CUDA is not available on this machine; valid: cpu")
    available = torch.cuda.device_count()
    if requested is not None and requested.startswith("cuda:"):
        index = requested.partition(":")[2]
        if not index.isdigit() or int(index) >= available:
            raise UserError(
                f"-d {requested}: no such device; valid: cuda:0 to cuda:{available - 1}"
            )
        return torch.device(requested), [int(index)]
    wanted = max(n_gpu, 1)
    if wanted > available:
        logger.warning(
            "n_gpu is %d but only %d GPU(s) are available; using %d.", wanted, available, available
        )
    return torch.device("cuda:0"), list(range(min(wanted, available)))
