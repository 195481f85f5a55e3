"""Coherency and candidate entropy against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dmc_envs.evaluation import PlanCoherency, PolicyCoherency, Proposal, histogram_entropy
from dmc_envs.tasks import Task, UniformBoxDensity, build_task


@pytest.fixture(scope="module")
def task() -> Task:
    return build_task("nav1d", {"horizon": 4, "step_size": 0.2})


def plan(states: list[float], actions: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """A Nav1D plan (time feature 0) as a proposal's (B=1, n=1, H, dim) tensors."""
    s = torch.tensor([[p, 0.0] for p in states], dtype=torch.float32)[None, None]
    a = torch.tensor(actions, dtype=torch.float32)[None, None, :, None]
    return s, a


def plan_coherency(task: Task, states, actions, width: float) -> float | None:
    proposal = Proposal(actions=actions[:, :, :1], plan_states=states, plan_actions=actions)
    return PlanCoherency(task.dynamics, width)(proposal, np.zeros((1, 2)))


def test_a_plan_that_follows_the_dynamics_is_fully_coherent(task: Task) -> None:
    states, actions = plan([0.0, 0.2, 0.3, 0.2], [1.0, 0.5, -0.5, 0.0])
    assert plan_coherency(task, states, actions, width=0.05) == pytest.approx(1.0, abs=1e-6)


def test_plan_coherency_is_the_mean_gaussian_kernel_of_the_gaps(task: Task) -> None:
    # Gaps: 0.05 (one width), 0, and 0.1 (two widths, where the action 2.0 is clipped to 1).
    states, actions = plan([0.0, 0.25, 0.35, 0.65], [1.0, 0.5, 2.0, 0.0])
    want = (math.exp(-0.5) + 1.0 + math.exp(-2.0)) / 3
    assert plan_coherency(task, states, actions, width=0.05) == pytest.approx(want, rel=1e-5)


def test_decision_diffuser_plans_with_one_action_fewer_are_scored(task: Task) -> None:
    states, actions = plan([0.0, 0.2, 0.3], [1.0, 0.5])
    assert plan_coherency(task, states, actions, width=0.05) == pytest.approx(1.0, abs=1e-6)


def test_policy_coherency_is_the_behaviour_density_of_first_actions() -> None:
    # Uniform on [-1, 1] has density 0.5 inside and 0 outside: 3 of 4 candidates inside.
    actions = torch.tensor([[0.1, -0.9], [1.5, 0.0]])[:, :, None, None]  # (B=2, n=2, 1, 1)
    measure = PolicyCoherency(UniformBoxDensity([-1.0], [1.0]))
    assert measure(Proposal(actions=actions), np.zeros((2, 2))) == pytest.approx(0.375)


def test_a_task_without_dynamics_gives_no_planner_coherency_and_says_why() -> None:
    from dmc_envs.evaluation import coherency_probe

    hopper = build_task("hopper")
    hopper.dynamics = None  # as a task that lacks the piece
    probe, why = coherency_probe(hopper, "planner", {}, width=0.05)
    assert probe is None and "no known dynamics" in why and "hopper" in why
    probe, why = coherency_probe(hopper, "policy", {}, width=0.05)
    assert probe is None and "behaviour policy" in why


def test_entropy_is_zero_for_identical_candidates_and_log_n_for_distinct_bins() -> None:
    low, high = -torch.ones(1), torch.ones(1)
    same = torch.full((3, 8, 1), 0.3)
    assert histogram_entropy(same, low, high, bins=20) == 0.0
    spread = torch.linspace(-0.95, 0.95, 4)[None, :, None]  # four different bins of 20
    assert histogram_entropy(spread, low, high, bins=20) == pytest.approx(math.log(4))


def test_entropy_sums_marginals_and_counts_outliers_in_edge_bins() -> None:
    low, high = -torch.ones(2), torch.ones(2)
    # dim 0: two bins (half each) -> log 2; dim 1: 5.0 and 1.0 both land in the top bin -> 0.
    actions = torch.tensor([[[-0.5, 5.0], [0.5, 1.0]]])
    assert histogram_entropy(actions, low, high, bins=4) == pytest.approx(math.log(2))
