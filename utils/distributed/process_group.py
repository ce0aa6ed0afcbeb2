"""Multi-process training under torchrun: each process's place, and talking across ranks.

torchrun starts one process per GPU (or per CPU slot) and tells each its place through
environment variables; the distributed unit (utils/distributed/launch.py) joins its process
group. Every helper here also works in a plain single process, where the rank is 0 and the
world has one member, so callers need no `if distributed` branches.
"""

import atexit
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import torch
import torch.distributed as dist

from utils.errors import UserError
from utils.units import has_unit, missing_unit

T = TypeVar("T")


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher using its variables) started this process."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def join_process_group(device: torch.device) -> torch.device:
    """Join torchrun's process group and return the device this rank trains on; that is the
    distributed unit's (utils/distributed/launch.py), and without it a one-line refusal."""
    if not has_unit("utils.distributed.launch"):
        raise missing_unit("torchrun", "utils/distributed/launch.py", "distributed",
                           "train in one process: python train.py ...")  # fmt: skip
    from utils.distributed.launch import init_distributed

    return init_distributed(device)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This process's place among those torchrun started on its node (0 outside torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def node_ranks() -> str:
    """Which node this is and which ranks run on it, for each node's console:
    `node 1 of 2 (gpu-07): ranks 4-7 of 8` (torchrun numbers a node's ranks consecutively)."""
    first = rank() - local_rank()
    last = first + int(os.environ.get("LOCAL_WORLD_SIZE", "1")) - 1
    node, nodes = os.environ.get("GROUP_RANK", "0"), os.environ.get("GROUP_WORLD_SIZE", "1")
    host = socket.gethostname()
    return f"node {node} of {nodes} ({host}): ranks {first}-{last} of {world_size()}"


def launcher() -> str:
    """What starts train.py again as this run was started: `python`, or torchrun with as many
    processes (on several nodes, `...` stands for this run's rendezvous options)."""
    if not is_distributed():
        return "python"
    nodes, per_node = os.environ.get("GROUP_WORLD_SIZE", "1"), os.environ["LOCAL_WORLD_SIZE"]
    if nodes == "1":
        return f"torchrun --standalone --nproc_per_node={per_node}"
    return f"torchrun --nnodes={nodes} --nproc_per_node={per_node} ..."


def is_main_process() -> bool:
    """Rank 0 is the only process that writes logs, TensorBoard events and checkpoints."""
    return rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all ranks, in place (a no-op in a single process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_from_main(value: object) -> object:
    """Rank 0's `value` on every rank (picklable Python data, e.g. a drawn seed)."""
    if not is_distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def on_main(action: Callable[..., T], *args: Any) -> T | None:
    """`action(*args)` on rank 0, None on the other ranks. A `UserError` it raises is raised on
    every rank: each ends with the line, rather than waiting for rank 0 in a collective."""
    result, refusal = None, None
    if is_main_process():
        try:
            result = action(*args)
        except UserError as error:
            refusal = str(error)
    refusal = broadcast_from_main(refusal)
    if refusal is not None:
        raise UserError(refusal)
    return result


def share_size(size: int) -> int:
    """How many of `size` samples each rank gets from `shard` (the same for every rank)."""
    return -(-size // world_size())


def shard(indices: torch.Tensor) -> torch.Tensor:
    """This rank's share of `indices`, padded by wrapping so every rank gets the same count
    (which keeps the ranks' collective calls in step); like DistributedSampler, a few samples
    are seen twice per epoch when the count does not divide evenly."""
    n_ranks = world_size()
    padding = share_size(len(indices)) * n_ranks - len(indices)
    if padding:
        indices = torch.cat([indices, indices[:padding]])
    return indices[rank() :: n_ranks]


def repeats_in_share(size: int) -> int:
    """How many of the samples at the end of this rank's `shard` of `size` are padding, a
    repeat of another rank's (0 or 1): its share less the samples that are its own."""
    return share_size(size) - len(range(rank(), size, world_size()))


def barrier() -> None:
    """Wait until every rank gets here (a no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def end_process(code: int) -> NoReturn:
    """Exit with `code`. A torchrun rank runs the exit handlers (logging's, W&B's) and flushes
    its streams, then skips the interpreter's teardown: there, threads gloo leaves behind can
    abort the process (SIGABRT, "terminate called without an active exception"; torch's), and
    torchrun would report a finished run as failed and start the job again. A stop signal
    now (torchrun ending the other ranks of a failed one) changes nothing: it is ignored,
    rather than raised inside an exit handler as a traceback."""
    if launched_by_torchrun():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
