"""Per-rank memory of `trainer.strategy: fsdp` as the number of ranks grows: the bytes each rank
holds in parameters, gradients and optimizer state after one Adam step, sharded by the
template's own `base.fsdp.shard`, against DDP (every rank holds everything).

    python benchmarks/fsdp_memory.py [--ranks 1 2 4] [--width 1024] [--depth 8] [--device cpu]

An MLP of `depth` square layers of `width` (biases too), Adam (two moments per parameter).
Each world size runs under `torchrun --standalone` (gloo on the CPU, NCCL on GPUs); each rank
counts the tensors it holds itself (a DTensor's local shard), so the numbers are exact, not a
process's resident size. On a GPU the peak allocated memory of the step is shown too.
Not part of the test suite; a few seconds per world size.
"""

# The imports after the sys.path line need the repository root on the path:
# ruff: noqa: E402
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

from benchmarks.common import describe_machine, first_paragraph
from utils.units import has_unit, missing_unit

MIB = 2**20


def local_bytes(tensors) -> int:
    """Bytes of the tensors as this rank holds them (a DTensor: its shard)."""
    total = 0
    for tensor in tensors:
        local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
        total += local.numel() * local.element_size()
    return total


def measure(strategy: str, width: int, depth: int, device_type: str) -> dict:
    """One rank: build, shard (or wrap in DDP), take one Adam step, count what it holds."""
    rank = int(os.environ["RANK"])
    device = torch.device(
        device_type, int(os.environ["LOCAL_RANK"]) if device_type == "cuda" else 0
    )
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(width, width) for _ in range(depth))).to(device)
    optimizer = torch.optim.Adam(model.parameters())
    if strategy == "fsdp":
        from base.fsdp import shard  # (main checked that this copy has it)

        shard(model, [optimizer])
        trained = model
    else:
        trained = nn.parallel.DistributedDataParallel(model)
    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trained(torch.randn(32, width, device=device)).square().mean().backward()
    optimizer.step()
    states = [
        t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)
    ]
    held = {
        "parameters": local_bytes(model.parameters()),
        "gradients": local_bytes(p.grad for p in model.parameters() if p.grad is not None),
        "optimizer": local_bytes(states),
    }
    if device_type == "cuda":
        held["peak_allocated"] = torch.cuda.max_memory_allocated(device)
    dist.destroy_process_group()
    return {"rank": rank, **held}


def run(strategy: str, ranks: int, args: argparse.Namespace, out: Path) -> list[dict]:
    """One world size under torchrun; each rank's counts."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sizes = ["--width", str(args.width), "--depth", str(args.depth), "--device", args.device]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={ranks}", __file__, "--worker", strategy, "--out", str(out),
               *sizes]  # fmt: skip
    subprocess.run(command, check=True, env=env, capture_output=True)
    return [json.loads(line) for line in out.read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a rank: fsdp or ddp
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not has_unit("base.fsdp"):
        sys.exit(str(missing_unit("fsdp_memory.py", "base/fsdp.py", "distributed",
                                  "there is no FSDP to measure")))  # fmt: skip
    if args.worker:
        counts = measure(args.worker, args.width, args.depth, args.device)
        with open(args.out, "a") as out:  # ranks append one line each
            out.write(json.dumps(counts) + "\n")
        return
    print(describe_machine())
    n_parameters = args.depth * (args.width**2 + args.width)
    print(f"\nMLP of {args.depth} x Linear({args.width}, {args.width}): {n_parameters:,} "
          "parameters, Adam; per-rank MiB after one step (rank 0; the others hold as "
          "much)\n")  # fmt: skip
    gpu = args.device == "cuda"
    print(
        "| strategy | ranks | parameters | gradients | optimizer | total | vs 1 rank |"
        + (" peak allocated |" if gpu else "")
    )
    print("|---|---|---|---|---|---|---|" + ("---|" if gpu else ""))
    first = None
    cases = [("fsdp", n) for n in args.ranks] + [("ddp", max(args.ranks))]
    for strategy, ranks in cases:
        with tempfile.TemporaryDirectory() as scratch:
            counts = run(strategy, ranks, args, Path(scratch) / "counts.jsonl")
        rank0 = next(c for c in counts if c["rank"] == 0)
        total = rank0["parameters"] + rank0["gradients"] + rank0["optimizer"]
        first = first or total
        peak = f" {rank0['peak_allocated'] / MIB:,.1f} |" if gpu else ""
        print(f"| {strategy} | {ranks} | {rank0['parameters'] / MIB:,.1f} | "
              f"{rank0['gradients'] / MIB:,.1f} | {rank0['optimizer'] / MIB:,.1f} | "
              f"{total / MIB:,.1f} | {total / first:.2f}x |{peak}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
