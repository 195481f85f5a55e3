"""The automatic schedule inside one pass: stop on convergence, roll back on collapse (spec §4.5).

The tracked objective is the mean r(z_0) of one fresh sample per held-out condition, drawn
with the same seed at every measurement so that two measurements differ only by the model.
The pass keeps the best state it measures (any improvement counts), and stops by itself once
`patience` measurements in a row have not improved by `min_delta x |reference|` on the
reference, the objective of the last improvement that large: a slow, steady climb is kept, and
it stops the pass only once it is slower than `min_delta` per `patience` measurements. A
collapse is any of: a NaN or infinite reward, loss or gradient; a loss above `loss_spike` x the
median |loss| of the recent updates; an objective below `best - reward_drop x |best|`. PPO's
surrogate is zero-mean by construction, so its loss has no scale to spike against: for PPO only
non-finite values and reward drops count. On a collapse the adapters go back to the best state
seen, the learning rate is multiplied by `lr_decay`, a fresh optimiser starts, and the event is
recorded; after `max_rollbacks` rollbacks the pass gives up. The pass always ends on its best
state.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from dmc_align.conditions import ConditionPool
from dmc_align.lora import adapter_state, load_adapter_state, sampling_mode, trainable_parameters
from dmc_align.methods import AlignContext, CollapseError, Method
from dmc_align.refinement import RefinedConditions
from dmc_core.training import adam

__all__ = ["LoopState", "PassOutcome", "PassRunner", "PassSnapshots"]

log = logging.getLogger(__name__)
SPIKE_WINDOW = 20


@dataclass
class PassOutcome:
    """What a pass did: its curve, its events and why it stopped."""

    steps: int
    initial_objective: float
    best_objective: float
    best_step: int
    stop_reason: str
    final_lr: float
    events: list[dict[str, Any]] = field(default_factory=list)
    curve: list[dict[str, float]] = field(default_factory=list)


@dataclass
class LoopState:
    """Everything the pass loop carries from one update to the next (what a snapshot keeps)."""

    best: float
    reference: float
    best_state: dict[str, torch.Tensor]
    outcome: PassOutcome
    optimizer: torch.optim.Optimizer
    best_step: int = 0
    step: int = 0  # the last finished update
    stale: int = 0
    rollbacks: int = 0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=SPIKE_WINDOW))
    metrics: dict[str, float] = field(default_factory=dict)


class PassSnapshots(Protocol):
    """Where a pass keeps its snapshots (`dmc_align.snapshots.PassSnapshot`)."""

    def due(self, step: int, updates_per_batch: int) -> bool:
        """Whether to save after update `step`."""
        ...

    def save(self, runner: PassRunner, state: LoopState) -> None:
        """Save the loop state."""
        ...

    def restore(self, runner: PassRunner) -> LoopState | None:
        """The saved loop state (loaded into the runner's model), or None to start afresh."""
        ...


class PassRunner:
    """Run one pass of a method on a model with LoRA adapters (see the module docstring)."""

    def __init__(
        self,
        context: AlignContext,
        method: Method,
        conditions: ConditionPool | RefinedConditions,
        generator: torch.Generator,
        objective_seed: int,
        on_round: Callable[[int], bool] | None = None,
        on_measure: Callable[[int, dict[str, float]], None] | None = None,
    ) -> None:
        """`on_round(step)` runs after every update (online fine-tuning) and returns True when
        it changed the critic, which re-bases the objective and the patience; `on_measure` sees
        every measurement (progress bars, learning curves)."""
        self.context, self.method, self.conditions = context, method, conditions
        self.generator = generator
        self.objective_seed = objective_seed
        self.on_round = on_round
        self.on_measure = on_measure
        self.spec = context.spec
        self.lr = self.spec.lr

    def parameters(self) -> list[torch.nn.Parameter]:
        """The trainable parameters (the adapters)."""
        return trainable_parameters(self.context.model)

    def _optimizer(self) -> torch.optim.Optimizer:
        return adam(self.parameters(), self.lr)

    @torch.no_grad()
    def objective(self) -> float:
        """Mean r(z_0) of one sample per held-out condition, from a fixed seed."""
        model = self.context.model
        history = self.conditions.held_out.to(next(model.parameters()).device)
        generator = torch.Generator(device=history.device).manual_seed(self.objective_seed)
        with sampling_mode(model):
            z0 = model.sample(history, generator, record=False).x0
        return float(self.context.reward(model, z0, history).mean())

    def run(self, snapshots: PassSnapshots | None = None) -> PassOutcome:
        """Train until converged, out of steps, or out of rollbacks; end on the best state.

        With `snapshots`, the whole loop state is saved every so often and a run started again
        continues from the last one (`dmc_align.snapshots`)."""
        state = snapshots.restore(self) if snapshots is not None else None
        if state is None:
            state = self._start()
        spec = self.spec
        for step in range(state.step + 1, spec.max_steps + 1):
            stop = self._iterate(step, state)
            state.step = step
            if stop:
                break
            if snapshots is not None and snapshots.due(step, self.method.updates_per_batch):
                snapshots.save(self, state)
        load_adapter_state(self.context.model, state.best_state)
        outcome = state.outcome
        outcome.steps, outcome.best_objective = state.step, state.best
        outcome.best_step, outcome.final_lr = state.best_step, self.lr
        return outcome

    def _start(self) -> LoopState:
        """The state before the first update: the foundation's (or previous pass's) objective."""
        initial = self.objective()
        state = LoopState(
            best=initial,
            reference=initial,
            best_state=adapter_state(self.context.model),
            outcome=PassOutcome(0, initial, initial, 0, "max_steps", self.lr),
            optimizer=self._optimizer(),
        )
        self._measured(state.outcome, 0, {"objective": initial, "lr": self.lr})
        return state

    def _iterate(self, step: int, state: LoopState) -> bool:
        """One update with what follows it (online round, measurement); True: stop the pass."""
        spec, outcome = self.spec, state.outcome
        try:
            state.metrics = self._update(step, state.optimizer, state.recent, state.metrics)
            if self.on_round is not None and self.on_round(step):
                state.best = state.reference = self.objective()
                state.best_state, state.best_step, state.stale = (
                    adapter_state(self.context.model),
                    step,
                    0,
                )
                outcome.events.append({"step": step, "kind": "critic_updated", "best": state.best})
            if step % spec.eval_every and step != spec.max_steps:
                return False
            value = self.objective()
            self._measured(outcome, step, {"objective": value, "lr": self.lr, **state.metrics})
            self._check_objective(value, state.best)
            if value > state.best:
                state.best, state.best_step = value, step
                state.best_state = adapter_state(self.context.model)
            if value > state.reference + spec.min_delta * abs(state.reference):
                state.reference, state.stale = value, 0
                return False
            state.stale += 1
            if state.stale >= spec.patience:
                outcome.stop_reason = "converged"
                outcome.events.append({"step": step, "kind": "converged", "best": state.best})
                return True
        except CollapseError as collapse:
            return self._roll_back(step, state, collapse)
        return False

    def _roll_back(self, step: int, state: LoopState, collapse: CollapseError) -> bool:
        """Restore the best adapters, decay the lr, start a fresh optimiser; True: give up."""
        spec, outcome = self.spec, state.outcome
        state.rollbacks += 1
        self.lr *= spec.collapse.lr_decay
        outcome.events.append(
            {
                "step": step,
                "kind": collapse.kind,
                "detail": collapse.detail,
                "action": f"rolled back to step {state.best_step}, lr {self.lr:.3g}",
            }
        )
        log.warning("step %d: %s; rolled back to step %d", step, collapse, state.best_step)
        load_adapter_state(self.context.model, state.best_state)
        state.optimizer, state.stale, state.metrics = self._optimizer(), 0, {}
        state.recent.clear()
        if state.rollbacks > spec.collapse.max_rollbacks:
            outcome.stop_reason = "gave_up"
            outcome.events.append({"step": step, "kind": "gave_up", "best": state.best})
            return True
        return False

    def _update(
        self,
        step: int,
        optimizer: torch.optim.Optimizer,
        recent: deque[float],
        metrics: dict[str, float],
    ) -> dict[str, float]:
        """Collect when due, then one optimiser step; raise `CollapseError` on bad values."""
        if (step - 1) % self.method.updates_per_batch == 0 or not metrics:
            history = self.conditions.sample(self.spec.conditions, self.generator)
            metrics = dict(self.method.collect(history, self.generator))
        loss, step_metrics = self.method.loss(self.generator)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise CollapseError("non_finite_loss", f"loss {value}")
        if self.method.loss_has_scale and len(recent) >= SPIKE_WINDOW // 2:
            typical = statistics.median(abs(v) for v in recent)
            if abs(value) > self.spec.collapse.loss_spike * max(typical, 1e-6):
                raise CollapseError(
                    "loss_spike", f"|loss| {abs(value):.4g} vs median {typical:.4g}"
                )
        recent.append(value)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.parameters(), self.spec.grad_clip)
        if not bool(torch.isfinite(norm)):
            raise CollapseError("non_finite_gradient", f"gradient norm {float(norm)}")
        optimizer.step()
        return {**metrics, **step_metrics, "loss": value}

    def _check_objective(self, value: float, best: float) -> None:
        if not math.isfinite(value):
            raise CollapseError("non_finite_objective", f"objective {value}")
        floor = best - self.spec.collapse.reward_drop * abs(best)
        if value < floor:
            raise CollapseError("reward_drop", f"objective {value:.4g} below {floor:.4g}")

    def _measured(self, outcome: PassOutcome, step: int, values: dict[str, float]) -> None:
        outcome.curve.append({"step": float(step), **values})
        if self.on_measure is not None:
            self.on_measure(step, values)
