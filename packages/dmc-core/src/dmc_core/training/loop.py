"""The resumable training loop every training stage runs (`pretrain`, `fit_critic`, ...).

A `ResumableRun` owns the loop: snapshots every `checkpoint_every` steps, bit-exact resume,
random generators re-seeded from (seed, rank, step) at every snapshot boundary, a progress bar
and learning curves (`<out>/live/`, see `dmc_core.training.curves`). A subclass says what one
step is (`step`), what it trains (`trained`: the module, its EMA, its optimiser) and what the
finished run writes (`finish`).

A snapshot also carries the curves logged so far, the last `log_every` values of every metric
and the time spent, so a run resumed after a kill (from the CLI, or by `dvc repro -f`, which
deletes `live/` first) ends with the same curves as an uninterrupted run, each step logged once,
and times the whole run. The time goes to `<out>/timing.json`, which DVC ignores (`.dvcignore`):
no stage depends on a wall-clock figure, so a byte-identical retrain re-runs nothing after it.

Every step is checked: a non-finite loss, gradient or weight stops the run at once with one
line naming the stage, the run, the step and what went non-finite (`DivergenceError`); no
snapshot and no artefact is written from non-finite weights.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from dmc_core.atomic import atomic_write_text
from dmc_core.config import to_plain
from dmc_core.data import TransitionDataset
from dmc_core.errors import DivergenceError
from dmc_core.seeding import rng_state_from_text, rng_state_to_text, torch_generator
from dmc_core.training.curves import Curves
from dmc_core.training.distributed import World
from dmc_core.training.ema import EMA
from dmc_core.training.resume import Snapshot, fingerprint

__all__ = ["LoopSchedule", "ResumableRun", "check_finite"]

log = logging.getLogger(__name__)

Generators = tuple[torch.Generator, torch.Generator]
TIMING_FILE = "timing.json"


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

    Subclasses set `name`, `stage`, `out`, `world`, `seed`, `schedule` and `snapshot` and
    implement the hooks. Generators: the first draws data (CPU), the second draws noise (run's
    device).
    """

    name: str
    stage: str
    out: Path
    world: World
    seed: int
    schedule: LoopSchedule
    snapshot: Snapshot

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

    def timing(self) -> dict[str, float]:
        """Other wall-clock figures of the run for `timing.json` (e.g. a preparation phase)."""
        return {}

    def trained(self) -> tuple[nn.Module, EMA | None, torch.optim.Optimizer]:
        """What a snapshot holds: the trained module, its EMA (or None) and its optimiser."""
        raise NotImplementedError

    def finish(self, summary: dict[str, float]) -> Path:
        """Write the final artefact (main process only) and return its path."""
        raise NotImplementedError

    # The loop -----------------------------------------------------------------------------

    def train(self, stop_after: int | None = None) -> Path | None:
        """Train to `schedule.steps` (or stop early after `stop_after` steps, leaving a
        snapshot). Returns the final artefact, or None when stopped early."""
        start, record = self.snapshot.resume(*self.trained())
        if start and self.world.is_main:
            log.info("%s: resuming from the snapshot at step %d", self.name, start)
        total, every = self.schedule.steps, self.schedule.checkpoint_every
        end = total if stop_after is None else min(total, stop_after)
        with _progress(self, start, record) as progress:
            generators = self.generators(start)
            if start % every:  # a stop off the re-seeding boundaries: continue its streams
                generators = _restored_generators(record, self.world) or generators
            for step in range(start, end):
                if step != start and step % every == 0:
                    generators = self.generators(step)
                values = self.step(step, generators)
                self._check(step + 1, values)
                progress.record(step, values)
                if (step + 1) % every == 0 and step + 1 < total:
                    self._snapshot(step + 1, progress, generators)
            if end < total:
                self._snapshot(end, progress, generators)
                return None
            path = self.out
            if self.world.is_main:
                path = self.finish(progress.summary())
                progress.finish()
                self.snapshot.clear()
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
        return Snapshot.of_output(self.out, fingerprint(to_plain(spec), self.seed, data))

    def restore_state(self) -> int:
        """Load a matching snapshot and return its step (0: start afresh)."""
        return self.snapshot.restore(*self.trained())

    def _check(self, step: int, values: dict[str, float]) -> None:
        """Stop on a non-finite weight (naming the gradient if it was the cause) or loss.

        The weights are checked first: under DDP they are equal on every rank, so every rank
        stops at the same step instead of one waiting for the others' gradients."""
        module, _, _ = self.trained()
        check_finite(f"{self.stage} {self.name}", step, module)
        loss = values.get("loss", 0.0)
        if not math.isfinite(loss):
            raise DivergenceError(
                f"{self.stage} {self.name}: step {step}: the loss is {loss}; nothing was saved "
                "(a smaller learning rate usually helps)"
            )

    def _snapshot(self, step: int, progress: _Progress, generators: Generators) -> None:
        # The generators' states travel too: a snapshot off a re-seeding boundary (a stop
        # requested with `stop_after`) still resumes the exact random streams.
        if self.world.is_main:
            record = progress.state() | {
                "generators": [rng_state_to_text(g.get_state()) for g in generators]
            }
            self.snapshot.save(step, *self.trained(), record=record)
        self.world.barrier()


def _restored_generators(record: dict[str, Any], world: World) -> Generators | None:
    """The generators as a snapshot left them (main process's record; DDP ranks re-seed)."""
    states = record.get("generators")
    if not states or world.size > 1:
        return None
    data = torch.Generator()
    data.set_state(rng_state_from_text(states[0]))
    noise = torch.Generator(device=world.device)
    noise.set_state(rng_state_from_text(states[1]))
    return data, noise


def check_finite(where: str, step: int, module: nn.Module) -> None:
    """Raise `DivergenceError` if a parameter of `module` is NaN or infinite after `step`.

    The message names the first such parameter and whether its gradient (still held after the
    optimiser step) was non-finite too: then the gradient is what diverged."""
    parameters = list(module.named_parameters())
    if not parameters or bool(torch.stack([p.isfinite().all() for _, p in parameters]).all()):
        return  # one synchronisation per step, not one per tensor
    name, parameter = next((n, p) for n, p in parameters if not bool(p.isfinite().all()))
    grad = parameter.grad
    cause = "gradient" if grad is not None and not bool(grad.isfinite().all()) else "weights"
    bad = int((~parameter.isfinite()).sum())
    raise DivergenceError(
        f"{where}: step {step}: non-finite {cause} ({bad} of {parameter.numel()} entries of "
        f"{name} are NaN or inf); nothing was saved (a smaller learning rate usually helps)"
    )


class _Progress:
    """Running metrics, progress bar, learning curves and time (main process only)."""

    def __init__(self, run: ResumableRun, start: int, record: dict[str, Any]) -> None:
        self.run, self.start = run, start
        self.every = run.schedule.log_every
        # The last `log_every` values of every metric, so the first window after a resume
        # averages the same values as the uninterrupted run's.
        self.history: dict[str, list[float]] = {
            k: list(v) for k, v in record.get("tail", {}).items()
        }
        self.done = int(record.get("steps_done", 0))
        self.seconds_before = float(record.get("seconds", 0.0))
        self.resumed_at = [*record.get("resumed_at", []), *([start] if start else [])]
        self.began = time.perf_counter()
        self.curves = None
        self.bar = None
        if run.world.is_main:
            from tqdm.auto import tqdm

            self.curves = Curves(run.out / "live", record.get("curves"))
            self.bar = tqdm(
                total=run.schedule.steps,
                initial=start,
                desc=f"{run.stage} {run.name}",
                unit="step",
            )

    def record(self, step: int, values: dict[str, float]) -> None:
        self.done += 1
        for key, value in values.items():
            window = self.history.setdefault(key, [])
            window.append(value)
            del window[: -self.every]
        if self.bar is not None:
            self.bar.update(1)
        if (step + 1) % self.every or self.curves is None:
            return
        windows = self._windows()
        logged = windows | self.run.gauges()
        self.curves.log(step + 1, {f"train/{k}": v for k, v in logged.items()})
        self.bar.set_postfix(loss=f"{windows.get('loss', float('nan')):.4f}")

    def _windows(self) -> dict[str, float]:
        """Mean of each metric over the last `log_every` steps."""
        return {k: sum(v) / len(v) for k, v in self.history.items() if v}

    def seconds(self) -> float:
        """Training time of the whole run so far, resumed parts included."""
        return self.seconds_before + time.perf_counter() - self.began

    def state(self) -> dict[str, Any]:
        """What a snapshot keeps of the progress (JSON)."""
        return {
            "curves": self.curves.state() if self.curves is not None else {},
            "tail": self.history,
            "steps_done": self.done,
            "seconds": self.seconds(),
            "resumed_at": self.resumed_at,
        }

    def summary(self) -> dict[str, float]:
        """The finished run's figures that belong with its artefact (no wall time)."""
        return {"final_loss": self._windows().get("loss", float("nan"))}

    def finish(self) -> None:
        """The curves' final `metrics.json` (also for a run shorter than `log_every`) and
        `<out>/timing.json`: the whole run's time and speed (no stage depends on it)."""
        if self.curves is not None:
            self.curves.write_summary()
        seconds = self.seconds()
        timing = {
            "stage": self.run.stage,
            "name": self.run.name,
            "seconds": round(seconds, 2),
            "steps": self.done,
            "steps_per_second": round(self.done / seconds, 2) if seconds > 0 else 0.0,
            "resumed_at": self.resumed_at,
            **self.run.timing(),
        }
        atomic_write_text(self.run.out / TIMING_FILE, json.dumps(timing, indent=2) + "\n")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextmanager
def _progress(run: ResumableRun, start: int, record: dict[str, Any]) -> Iterator[_Progress]:
    progress = _Progress(run, start, record)
    try:
        yield progress
    finally:
        progress.close()
