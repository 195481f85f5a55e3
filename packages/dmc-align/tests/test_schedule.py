"""The automatic schedule: a collapse is rolled back and recorded; a flat objective stops it."""

from __future__ import annotations

import math

import torch

from dmc_align.conditions import ConditionPool
from dmc_align.lora import adapter_state
from dmc_align.methods import PPO, SFT, AlignContext
from dmc_align.rewards import QFirstAction
from dmc_align.schedule import PassRunner
from dmc_align.spec import PassSpec
from dmc_core.config import from_plain
from dmc_core.data import TransitionDataset
from dmc_core.models import WindowSampler
from dmc_core.seeding import torch_generator
from dmc_critic import IQLCritic


def runner(
    model, critic: IQLCritic, dataset: TransitionDataset, method_class=SFT, **knobs
) -> PassRunner:
    spec = from_plain(
        PassSpec,
        {"model": "m", "after": "m", "dataset": "d", "critic": "c", "method": "sft", **knobs},
        "t",
        "p",
    )
    pool = ConditionPool.from_dataset(dataset, model.history_len, 16, torch_generator(0))
    windows = WindowSampler(dataset, model.horizon, model.history_len)
    context = AlignContext(model, QFirstAction(critic), spec, windows)
    return PassRunner(context, method_class(context), pool, torch_generator(1), objective_seed=5)


def measured_every_update(**knobs: object) -> dict[str, object]:
    """Knobs of a tiny SFT pass that measures its objective after every update."""
    tiny_sft = {"candidates": 2, "batch_size": 4}
    return {"max_steps": 100, "eval_every": 1, "conditions": 4, "sft": tiny_sft, **knobs}


class NaNOnCall:
    """The critic's reward, except NaN on the given calls (a collapse injected on purpose)."""

    def __init__(self, reward, bad_calls: set[int]) -> None:
        self.reward, self.bad_calls, self.calls = reward, bad_calls, 0

    def __call__(self, model, z0, history):
        self.calls += 1
        value = self.reward(model, z0, history)
        return torch.full_like(value, math.nan) if self.calls in self.bad_calls else value


def test_a_nan_reward_is_rolled_back_recorded_and_lowers_the_learning_rate(
    tiny, critic: IQLCritic, dataset: TransitionDataset
) -> None:
    model = tiny("policy")
    knobs = {
        "max_steps": 6,
        "eval_every": 3,
        "conditions": 8,
        "lr": 1e-3,
        "sft": {"candidates": 2, "updates_per_batch": 2, "batch_size": 8},
    }
    run = runner(model, critic, dataset, **knobs)
    start = adapter_state(model)
    # Call 1 is the initial objective; call 2 the first collect; call 3 the second collect.
    run.context.reward = NaNOnCall(run.context.reward, {3})
    outcome = run.run()
    events = [e for e in outcome.events if e["kind"] == "non_finite_reward"]
    assert len(events) == 1 and events[0]["step"] == 3
    assert "rolled back to step 0" in events[0]["action"]
    assert math.isclose(outcome.final_lr, 5e-4)
    assert outcome.steps == 6 and math.isfinite(outcome.best_objective)
    if outcome.best_step == 0:  # the pass ended on the state it rolled back to
        for name, tensor in adapter_state(model).items():
            assert torch.equal(tensor, start[name])


def test_too_many_collapses_give_up(tiny, critic: IQLCritic, dataset: TransitionDataset) -> None:
    model = tiny("policy")
    knobs = {
        "max_steps": 20,
        "conditions": 4,
        "collapse": {"max_rollbacks": 1},
        "sft": {"candidates": 2, "batch_size": 4},
    }
    run = runner(model, critic, dataset, **knobs)
    run.context.reward = NaNOnCall(run.context.reward, set(range(2, 100)))
    outcome = run.run()
    kinds = [e["kind"] for e in outcome.events]
    assert kinds == ["non_finite_reward", "non_finite_reward", "gave_up"]
    assert outcome.stop_reason == "gave_up" and outcome.steps == 2


def test_a_flat_objective_stops_the_pass(
    tiny, critic: IQLCritic, dataset: TransitionDataset
) -> None:
    model = tiny("policy")
    knobs = measured_every_update(patience=2, min_delta=10.0, lr=1e-6)
    outcome = runner(model, critic, dataset, **knobs).run()
    assert outcome.stop_reason == "converged" and outcome.steps == 2
    assert outcome.events[-1]["kind"] == "converged"
    assert [c["step"] for c in outcome.curve] == [0.0, 1.0, 2.0]


def test_a_slow_climb_stops_the_pass_on_its_best_state_not_its_first(
    tiny, critic: IQLCritic, dataset: TransitionDataset
) -> None:
    """Improvements below min_delta do not restart the patience, but the best of them is kept."""
    model = tiny("policy")
    run = runner(model, critic, dataset, **measured_every_update(patience=3, min_delta=0.01))
    climb = iter([4.0, 4.001, 4.002, 4.1, 4.101, 4.103, 4.102])
    kept: dict[float, dict[str, torch.Tensor]] = {}

    def objective() -> float:
        value = next(climb)
        kept[value] = adapter_state(model)
        return value

    run.objective = objective  # type: ignore[method-assign]
    outcome = run.run()
    # 4.1 restarts the patience (4.1 > 4.0 x 1.01); 4.101, 4.103 and 4.102 do not (< 4.141).
    assert outcome.stop_reason == "converged" and outcome.steps == 6
    assert outcome.best_step == 5 and outcome.best_objective == 4.103
    for name, tensor in adapter_state(model).items():
        assert torch.equal(tensor, kept[4.103][name])


def test_a_critic_update_restarts_the_patience(
    tiny, critic: IQLCritic, dataset: TransitionDataset
) -> None:
    """Online rounds re-base the objective; the flat stretch before one does not count."""
    model = tiny("policy")
    knobs = measured_every_update(max_steps=6, patience=3, min_delta=10.0, lr=1e-6)
    run = runner(model, critic, dataset, **knobs)
    run.on_round = lambda step: step % 2 == 0  # the critic changes every second update
    outcome = run.run()
    assert outcome.stop_reason == "max_steps" and outcome.steps == 6
    assert [e["kind"] for e in outcome.events] == ["critic_updated"] * 3


def test_a_reward_drop_is_a_collapse(tiny, critic: IQLCritic, dataset: TransitionDataset) -> None:
    model = tiny("policy")
    knobs = {
        "max_steps": 2,
        "eval_every": 1,
        "conditions": 4,
        "collapse": {"reward_drop": 0.1},
        "sft": {"candidates": 2, "batch_size": 4},
    }
    run = runner(model, critic, dataset, **knobs)
    honest = run.context.reward
    calls = {"n": 0}

    def dropping(m, z0, history):
        calls["n"] += 1
        value = honest(m, z0, history)
        drop = 10.0 * value.abs() + 100.0
        return value - drop if calls["n"] == 3 else value  # the first measurement after step 1

    run.context.reward = dropping
    outcome = run.run()
    assert [e["kind"] for e in outcome.events][:1] == ["reward_drop"]


def test_ppo_losses_near_zero_are_not_spikes(
    tiny, critic: IQLCritic, dataset: TransitionDataset
) -> None:
    """The surrogate is ~0 on every fresh batch: a spike rule on it would fire on every batch."""
    model = tiny("policy")
    knobs = {
        "method": "ppo",
        "max_steps": 24,
        "eval_every": 24,
        "conditions": 4,
        "lr": 1e-3,
        "ppo": {"candidates": 2, "last_steps": 2, "updates_per_batch": 2},
    }
    outcome = runner(model, critic, dataset, PPO, **knobs).run()
    assert [e["kind"] for e in outcome.events] == []
    assert outcome.steps == 24
