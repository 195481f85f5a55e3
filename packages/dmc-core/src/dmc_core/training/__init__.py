"""Training runtime shared by the stages: EMA, resumable snapshots, data-parallel worlds."""

from __future__ import annotations

from dmc_core.training.distributed import World, choose_device, data_parallel_world
from dmc_core.training.ema import EMA
from dmc_core.training.loop import LoopSchedule, ResumableRun
from dmc_core.training.optimizers import adam, descend
from dmc_core.training.resume import Snapshot, fingerprint

__all__ = [
    "EMA",
    "LoopSchedule",
    "ResumableRun",
    "Snapshot",
    "World",
    "adam",
    "choose_device",
    "data_parallel_world",
    "descend",
    "fingerprint",
]
