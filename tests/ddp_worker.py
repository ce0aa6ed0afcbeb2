"""Run train.py under torchrun, then save this rank's final weights to OUT_DIR/rank<R>.pt.

Usage: torchrun --nproc_per_node=N tests/ddp_worker.py OUT_DIR [train.py arguments...]
The DDP test compares the files: every rank must end with the same weights.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

import train
from utils.distributed.process_group import rank, shutdown

if __name__ == "__main__":
    out_dir, *train_args = sys.argv[1:]
    try:
        trainer, run_dirs = train.build(train.parse_args(train_args))
        trainer.train(run_dirs)
        torch.save(trainer.bare_model.state_dict(), Path(out_dir) / f"rank{rank()}.pt")
    finally:
        shutdown()
