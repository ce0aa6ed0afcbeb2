"""Joining torchrun's process group (the distributed unit): one process per GPU, or per CPU
slot, each told its place by torchrun's environment variables."""

import os

import torch
import torch.distributed as dist

from utils.distributed.process_group import local_rank


def init_distributed(device: torch.device) -> torch.device:
    """Join torchrun's process group (NCCL on GPUs, one per local rank; gloo on the CPU) and
    return the device this rank trains on."""
    options = {"store": _store(), "rank": int(os.environ["RANK"]),
               "world_size": int(os.environ["WORLD_SIZE"])}  # fmt: skip
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device, **options)
    else:
        dist.init_process_group("gloo", **options)
    return device


def _store() -> dist.Store:
    """torchrun's key-value store, where the ranks find each other, with this start's keys
    apart from those of earlier starts: torchrun restarts a group on the same store (its
    port unchanged), where the addresses the dead group left would have the new one wait
    for processes that no longer exist."""
    agent_hosts_it = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), int(os.environ["WORLD_SIZE"]),
        is_master=not agent_hosts_it and os.environ["RANK"] == "0",
    )  # fmt: skip
    return dist.PrefixStore(f"start{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
