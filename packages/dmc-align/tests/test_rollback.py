"""A collapse of any kind rolls the adapters back to the best state measured, at once.

A fake method trains the adapters towards a fixed target, and the reward is how close they are
to it, so every update improves the objective and the best state is the last one measured. The
method injects one fault at a chosen update and records the adapters and the learning rate at
the start of every update, so the state the pass continues from right after the rollback is
compared with the best state itself (not with the state the pass ends on, which the final
restore makes the best one whatever the rollback did).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from dmc_align.conditions import ConditionPool
from dmc_align.lora import adapter_state, trainable_parameters
from dmc_align.methods import AlignContext
from dmc_align.schedule import PassRunner
from dmc_align.spec import PassSpec
from dmc_core.config import from_plain
from dmc_core.data import TransitionDataset
from dmc_core.models import ControlModel, WindowSampler
from dmc_core.seeding import torch_generator

LR, LR_DECAY = 1e-2, 0.5
EVAL_EVERY = 4
BEST_STEP = 12  # the last measurement before the fault, the best one


def fault_step(fault: str) -> int:
    """The update that collapses: two after the best measurement; a reward drop is seen at the
    next measurement."""
    return BEST_STEP + EVAL_EVERY if fault == "reward_drop" else BEST_STEP + 2


class CloseToTarget:
    """r = -mean (adapter - 1)^2 for every sample: it depends on the adapters only, so it rises
    with every update of `AdapterTarget`. `nan` makes the next call NaN; `offset` is added."""

    def __init__(self) -> None:
        self.nan = False
        self.offset = 0.0

    def __call__(self, model: ControlModel, z0: Tensor, history: Tensor) -> Tensor:
        with torch.no_grad():
            parameters = trainable_parameters(model)
            distance = sum(float((p - 1.0).pow(2).sum()) for p in parameters)
            size = sum(p.numel() for p in parameters)
        value = torch.full((z0.shape[0],), -distance / size + self.offset)
        if self.nan:
            self.nan = False
            value[0] = math.nan
        return value


class _InfiniteGradient(torch.autograd.Function):
    """The identity whose backward is infinite: a finite loss with a non-finite gradient."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return torch.full_like(grad, math.inf)


class AdapterTarget:
    """A method whose loss pulls every adapter towards 1, with one fault at update `at`.

    It records, at the start of every update (its `collect`: one per update), the adapters and
    the runner's learning rate and optimiser's learning rate.
    """

    updates_per_batch = 1
    loss_has_scale = True

    def __init__(self, context: AlignContext, reward: CloseToTarget, fault: str, at: int) -> None:
        self.context, self.reward, self.fault, self.at = context, reward, fault, at
        self.update = 0
        self.states: dict[int, dict[str, Tensor]] = {}
        self.lrs: dict[int, tuple[float, float]] = {}
        self.runner: PassRunner | None = None
        self.optimizers: list[torch.optim.Optimizer] = []

    def collect(self, history: Tensor, generator: torch.Generator) -> dict[str, float]:
        """Record the start of an update; score a dummy batch (NaN at the fault)."""
        self.update += 1
        self.reward.offset = 0.0
        self.states[self.update] = adapter_state(self.context.model)
        assert self.runner is not None
        self.lrs[self.update] = (self.runner.lr, self.optimizers[-1].param_groups[0]["lr"])
        model = self.context.model
        z0 = torch.zeros(2 * history.shape[0], model.horizon, model.transition_dim)
        self.reward.nan = self.fault == "non_finite_reward" and self.update == self.at
        reward = self.context.score(z0, history.repeat_interleave(2, dim=0), history.shape[0])
        return {"reward": float(reward.mean())}

    def loss(self, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """sum (adapter - 1)^2, faulty at update `at`."""
        loss = sum((p - 1.0).pow(2).sum() for p in trainable_parameters(self.context.model))
        assert isinstance(loss, Tensor)
        if self.update == self.at:
            if self.fault == "non_finite_loss":
                loss = loss * math.nan
            elif self.fault == "loss_spike":
                loss = loss + 1e6
            elif self.fault == "non_finite_gradient":
                first = trainable_parameters(self.context.model)[0]
                loss = loss + 0.0 * _InfiniteGradient.apply(first).sum()
            elif self.fault == "reward_drop":  # the measurement after this update drops
                self.reward.offset = -100.0
        return loss, {}


def run_with_fault(
    model: ControlModel, dataset: TransitionDataset, fault: str
) -> tuple[AdapterTarget, Any, dict[int, tuple[float, dict[str, Tensor]]]]:
    """A pass of `AdapterTarget` with `fault` at its `fault_step`; also every measurement's
    objective and adapters, by step."""
    knobs = {
        "max_steps": fault_step(fault) + 3,
        "eval_every": EVAL_EVERY,
        "patience": 100,
        "min_delta": 0.0,
        "conditions": 4,
        "held_out": 4,
        "lr": LR,
        "collapse": {"lr_decay": LR_DECAY},
    }
    values = {"model": "m", "after": "m", "dataset": "d", "critic": "c", "method": "sft"}
    spec = from_plain(PassSpec, {**values, **knobs}, "test", "pass")
    pool = ConditionPool.from_dataset(dataset, model.history_len, 4, torch_generator(0))
    windows = WindowSampler(dataset, model.horizon, model.history_len)
    reward = CloseToTarget()
    context = AlignContext(model, reward, spec, windows)
    method = AdapterTarget(context, reward, fault, fault_step(fault))
    measured: dict[int, tuple[float, dict[str, Tensor]]] = {}

    def on_measure(step: int, values: dict[str, float]) -> None:
        measured[step] = (values["objective"], adapter_state(model))

    runner = PassRunner(
        context, method, pool, torch_generator(1), objective_seed=5, on_measure=on_measure
    )
    method.runner = runner
    make_optimizer = runner._optimizer

    def recorded_optimizer() -> torch.optim.Optimizer:
        optimizer = make_optimizer()
        method.optimizers.append(optimizer)
        return optimizer

    runner._optimizer = recorded_optimizer  # type: ignore[method-assign]
    return method, runner.run(), measured


@pytest.mark.parametrize(
    "fault",
    ["non_finite_reward", "non_finite_loss", "non_finite_gradient", "loss_spike", "reward_drop"],
)
def test_a_collapse_restores_the_best_state_before_the_next_update(
    fault: str, tiny, dataset: TransitionDataset
) -> None:
    """A rollback that restores nothing, or the wrong state, or keeps the lr, fails this."""
    method, outcome, measured = run_with_fault(tiny("policy"), dataset, fault)
    at = fault_step(fault)
    # Before the fault every measurement improved: the best state is the last one measured.
    objectives = [measured[s][0] for s in range(0, BEST_STEP + 1, EVAL_EVERY)]
    assert objectives == sorted(objectives) and len(set(objectives)) == len(objectives)
    best = measured[BEST_STEP][1]

    events = [e for e in outcome.events if "action" in e]
    assert [(e["kind"], e["step"]) for e in events] == [(fault, at)]
    assert events[0]["action"].startswith(f"rolled back to step {BEST_STEP}, lr ")

    # The adapters had moved on from the best state when the fault came ...
    at_fault = method.states[at] if fault != "reward_drop" else measured[at][1]
    assert any(not torch.equal(at_fault[name], best[name]) for name in best)
    # ... and the next update starts from the best state, exactly, at the decayed lr.
    after = method.states[at + 1]
    assert after.keys() == best.keys()
    for name, tensor in best.items():
        assert torch.equal(after[name], tensor), name
    assert method.lrs[at] == (LR, LR)
    assert method.lrs[at + 1] == (LR * LR_DECAY, LR * LR_DECAY)
    # A fresh optimiser: the one before the fault carried Adam moments of the lost updates.
    assert len(method.optimizers) == 2
    assert outcome.final_lr == LR * LR_DECAY and outcome.stop_reason == "max_steps"
