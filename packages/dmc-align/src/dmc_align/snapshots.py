"""Resumable alignment passes: the whole loop state of a pass in one atomic snapshot.

Every `snapshot_every` updates (at the first update after that which ends a method's batch, so
the next update collects afresh and no collected batch needs keeping) the pass writes
`<out>/.resume/state.safetensors`: the adapters, the best adapters, the optimiser, the loop's
counters and events, the random generators, and every other part of the pass that changes as
it trains (the online rounds' critic, its optimiser, the rolled-out transitions and the
conditions they added; the learning curves and the time spent). A pass killed at any instant
and started again (from the CLI, or by `dvc repro -f`, which deletes the outputs but not
`.resume/`) continues from the last snapshot and ends with the same weights, curves and
metrics as an uninterrupted run. The snapshot is fingerprinted by the pass's settings and the
hashes of its input files, so a changed input never continues a stale pass.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from dmc_align.lora import adapter_state, load_adapter_state
from dmc_align.schedule import SPIKE_WINDOW, LoopState, PassOutcome, PassRunner
from dmc_core.seeding import rng_state_from_text, rng_state_to_text
from dmc_core.training.resume import (
    Snapshot,
    load_optimizer_tensors,
    optimizer_tensors,
    prefixed_tensors,
    unprefixed,
)

__all__ = ["PassSnapshot", "Stateful"]

log = logging.getLogger(__name__)


@runtime_checkable
class Stateful(Protocol):
    """A part of a pass that changes as it trains and must be snapshotted with it."""

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Its tensors and its JSON record."""
        ...

    def load_state(self, tensors: Mapping[str, Tensor], record: Mapping[str, Any]) -> None:
        """Continue from what `state` returned."""
        ...


class PassSnapshot:
    """The snapshots of one pass (see the module docstring); a `PassSnapshots` for the loop."""

    def __init__(
        self, snapshot: Snapshot, every: int, parts: Mapping[str, Stateful] | None = None
    ) -> None:
        """Snapshots in `snapshot` every `every` updates, with the extra `parts` by name."""
        self.snapshot = snapshot
        self.every = every
        self.parts = dict(parts or {})
        self.last = 0

    def due(self, step: int, updates_per_batch: int) -> bool:
        """After `every` updates since the last one, at the end of a collected batch."""
        return step - self.last >= self.every and step % updates_per_batch == 0

    def save(self, runner: PassRunner, state: LoopState) -> None:
        """Write the loop state and every part's state (one atomic file)."""
        tensors = prefixed_tensors("adapters/", adapter_state(runner.context.model))
        tensors |= prefixed_tensors("best/", state.best_state)
        tensors |= prefixed_tensors("optim/", optimizer_tensors(state.optimizer))
        record: dict[str, Any] = {"loop": _loop_record(runner, state)}
        for name, part in self.parts.items():
            part_tensors, part_record = part.state()
            tensors |= prefixed_tensors(f"{name}/", part_tensors)
            record[name] = part_record
        self.snapshot.write(state.step, tensors, record)
        self.last = state.step
        log.info("pass snapshot at update %d", state.step)

    def restore(self, runner: PassRunner) -> LoopState | None:
        """Load a matching snapshot into the runner, its model and the parts."""
        found = self.snapshot.read()
        if found is None:
            return None
        step, tensors, record = found
        load_adapter_state(runner.context.model, unprefixed(tensors, "adapters/"))
        loop = record["loop"]
        runner.lr = loop["lr"]
        runner.generator.set_state(rng_state_from_text(loop["generator"]))
        torch.set_rng_state(rng_state_from_text(loop["torch_rng"]))
        optimizer = runner._optimizer()
        load_optimizer_tensors(optimizer, unprefixed(tensors, "optim/"))
        for name, part in self.parts.items():
            part.load_state(unprefixed(tensors, f"{name}/"), record[name])
        self.last = step
        log.info("resuming the pass from its snapshot at update %d", step)
        return LoopState(
            best=loop["best"],
            reference=loop["reference"],
            best_state=unprefixed(tensors, "best/"),
            outcome=PassOutcome(**loop["outcome"]),
            optimizer=optimizer,
            best_step=loop["best_step"],
            step=step,
            stale=loop["stale"],
            rollbacks=loop["rollbacks"],
            recent=deque(loop["recent"], maxlen=SPIKE_WINDOW),
            metrics=loop["metrics"],
        )


def _loop_record(runner: PassRunner, state: LoopState) -> dict[str, Any]:
    return {
        "lr": runner.lr,
        "generator": rng_state_to_text(runner.generator.get_state()),
        "torch_rng": rng_state_to_text(torch.get_rng_state()),
        "best": state.best,
        "reference": state.reference,
        "best_step": state.best_step,
        "stale": state.stale,
        "rollbacks": state.rollbacks,
        "recent": list(state.recent),
        "metrics": state.metrics,
        "outcome": asdict(state.outcome),
    }
