"""Data-parallel training under `torchrun`: one process per device, PyTorch's own DDP engine.

`torchrun --nproc_per_node N python -m dmc_core pretrain ...` sets RANK, LOCAL_RANK and
WORLD_SIZE; a plain `python -m ...` run is a world of one. Gloo carries the gradients on CPU,
NCCL on GPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["World", "choose_device", "data_parallel_world"]


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int
    size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """The process that logs, shows progress and writes files."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (a no-op in a world of one)."""
        if self.size > 1:
            dist.barrier()


def choose_device(preference: str, local_rank: int = 0) -> torch.device:
    """`auto` takes the local GPU when there is one; `cuda` insists on it."""
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA device is available")
    return torch.device("cuda", local_rank)


@contextmanager
def data_parallel_world(preference: str = "auto") -> Iterator[World]:
    """Join the process group that torchrun set up (if any) for the duration of the block."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = choose_device(preference, local_rank)
    if size == 1:
        yield World(0, 1, device)
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        # Processes share the cores: oversubscribed threads make CPU DDP slower, not faster.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // size))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield World(rank, size, device)
    finally:
        dist.destroy_process_group()
