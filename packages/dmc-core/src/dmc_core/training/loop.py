"""The resumable training loop every training stage runs (`pretrain`, `fit_critic`, ...).

A `ResumableRun` owns the loop: snapshots every `checkpoint_every` steps, bit-exact resume,
random generators re-seeded from (seed, rank, step) at every snapshot boundary, a progress bar
and dvclive metrics. A subclass says what one step is (`step`), what a snapshot holds
(`save_state` / `restore_state`) and what the finished run writes (`finish`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch

from dmc_core.config import to_plain
from dmc_core.data import TransitionDataset
from dmc_core.seeding import torch_generator
from dmc_core.training.distributed import World
from dmc_core.training.resume import Snapshot, fingerprint

__all__ = ["LoopSchedule", "ResumableRun"]

log = logging.getLogger(__name__)

Generators = tuple[torch.Generator, torch.Generator]


class LoopSchedule(Protocol):
    """How long a run trains and how often it snapshots and logs."""

    @property
    def steps(self) -> int: ...
    @property
    def checkpoint_every(self) -> int: ...
    @property
    def log_every(self) -> int: ...


class ResumableRun:
    """Base of the training runs: the loop, its snapshots and its metrics (see module doc).

    Subclasses set `name`, `stage`, `out`, `world`, `seed` and `schedule` and implement the
    four hooks. Generators: the first draws data (CPU), the second draws noise (run's device).
    """

    name: str
    stage: str
    out: Path
    world: World
    seed: int
    schedule: LoopSchedule

    # Hooks ------------------------------------------------------------------------------

    @property
    def parameters(self) -> int:
        """Trainable parameters (logged)."""
        raise NotImplementedError

    def step(self, step: int, generators: Generators) -> dict[str, float]:
        """One optimiser step; returns its scalar metrics (must include `loss`)."""
        raise NotImplementedError

    def gauges(self) -> dict[str, float]:
        """Values logged as they are at each log point (e.g. the learning rate)."""
        return {}

    def save_state(self, step: int) -> None:
        """Write the resumable state after `step` steps (main process only)."""
        raise NotImplementedError

    def restore_state(self) -> int:
        """Load a matching snapshot and return its step (0: start afresh)."""
        raise NotImplementedError

    def finish(self, summary: dict[str, float]) -> Path:
        """Write the final artefact (main process only) and return its path."""
        raise NotImplementedError

    # The loop -----------------------------------------------------------------------------

    def train(self, stop_after: int | None = None) -> Path | None:
        """Train to `schedule.steps` (or stop early after `stop_after` steps, leaving a
        snapshot). Returns the final artefact, or None when stopped early."""
        start = self.restore_state()
        if start and self.world.is_main:
            log.info("%s: resuming from the snapshot at step %d", self.name, start)
        total, every = self.schedule.steps, self.schedule.checkpoint_every
        end = total if stop_after is None else min(total, stop_after)
        with _progress(self, start) as progress:
            for step in range(start, end):
                if step == start or step % every == 0:
                    generators = self.generators(step)
                progress.record(step, self.step(step, generators))
                if (step + 1) % every == 0 and step + 1 < total:
                    self._snapshot(step + 1)
        if end < total:
            self._snapshot(end)
            return None
        path = self.out
        if self.world.is_main:
            path = self.finish(progress.summary)
        self.world.barrier()
        return path

    def generators(self, step: int) -> Generators:
        """Generators for the steps from `step` on, seeded from (seed, rank, step), so that a
        resumed run draws exactly the batches and noise the uninterrupted run would have drawn
        (snapshots fall on these boundaries)."""
        value = int(fingerprint(self.seed, self.world.rank, step), 16) % 2**63
        return torch_generator(value), torch_generator(value + 1, self.world.device)

    def make_snapshot(self, spec: Any, dataset: TransitionDataset, digest: str | None) -> Snapshot:
        """The run's snapshot in `<out>/.resume`, fingerprinted by the spec, the seed and the
        dataset (its file hash when given), so a changed setting never resumes a stale run."""
        data = digest or fingerprint(len(dataset), dataset.attrs)
        return Snapshot(self.out / ".resume", fingerprint(to_plain(spec), self.seed, data))

    def _snapshot(self, step: int) -> None:
        if self.world.is_main:
            self.save_state(step)
        self.world.barrier()


class _Progress:
    """Running metrics, progress bar and dvclive logging (main process only)."""

    def __init__(self, run: ResumableRun, start: int) -> None:
        self.run, self.start = run, start
        self.every = run.schedule.log_every
        self.history: dict[str, list[float]] = {}
        self.done = 0
        self.began = time.perf_counter()
        self.summary: dict[str, float] = {}
        self.live = None
        self.bar = None
        if run.world.is_main:
            from dvclive import Live
            from tqdm.auto import tqdm

            self.live = Live(
                str(run.out / "live"), resume=start > 0, dvcyaml=False, save_dvc_exp=False
            )
            self.live.step = start
            self.live.log_param("parameters", run.parameters)
            self.bar = tqdm(
                total=run.schedule.steps,
                initial=start,
                desc=f"{run.stage} {run.name}",
                unit="step",
            )

    def record(self, step: int, values: dict[str, float]) -> None:
        self.done += 1
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)
        if self.bar is not None:
            self.bar.update(1)
        if (step + 1) % self.every or self.live is None:
            return
        self.live.step = step + 1
        windows = self._windows()
        for key, value in (windows | self.run.gauges()).items():
            self.live.log_metric(f"train/{key}", value)
        self.bar.set_postfix(loss=f"{windows.get('loss', float('nan')):.4f}")

    def _windows(self) -> dict[str, float]:
        """Mean of each metric over the last `log_every` steps."""
        return {k: sum(v[-self.every :]) / len(v[-self.every :]) for k, v in self.history.items()}

    def close(self) -> None:
        elapsed = time.perf_counter() - self.began
        self.summary = {
            "final_loss": self._windows().get("loss", float("nan")),
            "seconds": round(elapsed, 2),
            "steps_per_second": round(self.done / elapsed, 2) if elapsed > 0 else 0.0,
        }
        if self.bar is not None:
            self.bar.close()
        if self.live is not None:
            # dvclive already reports the last logged loss as train.loss.
            self.live.summary.update({k: v for k, v in self.summary.items() if k != "final_loss"})
            self.live.make_summary()
            self.live.end()


@contextmanager
def _progress(run: ResumableRun, start: int) -> Iterator[_Progress]:
    progress = _Progress(run, start)
    try:
        yield progress
    finally:
        progress.close()
