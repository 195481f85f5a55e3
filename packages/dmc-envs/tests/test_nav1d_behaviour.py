"""Tests for the Nav1D behaviour policies and their exact densities."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from dmc_envs.nav1d import (
    BehaviourPolicy,
    Nav1DSolution,
    Nav1DTask,
    NoisyOptimalPolicy,
    UniformPolicy,
    policy_from_dict,
    solve,
)

ACTIONS = np.linspace(-1.0, 1.0, 40_001)


@pytest.fixture(scope="module")
def task() -> Nav1DTask:
    return Nav1DTask.from_params(horizon=6, reward_seed=3)


@pytest.fixture(scope="module")
def solution(task: Nav1DTask) -> Nav1DSolution:
    return solve(task, grid_per_step=20)


def _policies(solution: Nav1DSolution) -> list[BehaviourPolicy]:
    return [
        UniformPolicy(),
        UniformPolicy(-0.5, 0.25),
        NoisyOptimalPolicy(solution, 0.03),
        NoisyOptimalPolicy(solution, 0.3),
        NoisyOptimalPolicy(solution, 2.0),
    ]


def _integral(policy: BehaviourPolicy, state: float, t: int) -> float:
    """Trapezoid quadrature of the action density over [-1, 1] for one state."""
    pdf = policy.density(state, t, ACTIONS)
    return float(np.sum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(ACTIONS)))


@pytest.mark.parametrize("index", range(5))
def test_densities_integrate_to_one(solution: Nav1DSolution, index: int) -> None:
    policy = _policies(solution)[index]
    assert isinstance(policy, BehaviourPolicy)
    for state, t in [(-1.0, 0), (-0.37, 2), (0.0, 3), (0.81, 5), (1.0, 4)]:
        # The uniform sub-range has jumps inside the grid, so its quadrature is coarser.
        assert _integral(policy, state, t) == pytest.approx(1.0, abs=1e-4)
    outside = policy.density(np.zeros(2), 1, np.array([[-1.001], [1.001]]))
    np.testing.assert_array_equal(outside, 0.0)


@pytest.mark.parametrize("index", range(5))
def test_samples_follow_the_density(solution: Nav1DSolution, index: int) -> None:
    policy = _policies(solution)[index]
    rng = np.random.default_rng(index)
    n, state, t = 100_000, 0.37, 2
    actions = policy.sample(np.full(n, state), t, rng)
    assert actions.shape == (n, 1) and actions.dtype == np.float32
    assert np.all(np.abs(actions) <= 1.0)
    edges = np.linspace(-1.0, 1.0, 41)
    observed = np.histogram(actions[:, 0], bins=edges)[0] / n
    # Expected bin probabilities from the density (fine quadrature inside each bin).
    cdf = np.concatenate([[0.0], np.cumsum(_bin_masses(policy, state, t))])
    expected = np.diff(cdf[np.searchsorted(ACTIONS, edges)])
    tolerance = 5 * np.sqrt(expected * (1 - expected) / n) + 1e-3
    assert np.all(np.abs(observed - expected) <= tolerance)


def _bin_masses(policy: BehaviourPolicy, state: float, t: int) -> np.ndarray:
    """Probability mass between consecutive points of ACTIONS (trapezoid rule)."""
    pdf = policy.density(state, t, ACTIONS)
    return 0.5 * (pdf[1:] + pdf[:-1]) * np.diff(ACTIONS)


def test_truncated_normal_density_at_the_boundary(solution: Nav1DSolution) -> None:
    # From -1 the first target (mean ~ -0.66) is more than a step away: the optimal action is
    # a full step up, i.e. the untruncated normal is centred on the upper bound.
    mean = float(solution.optimal_action(-1.0, 0))
    assert mean == pytest.approx(1.0, abs=1e-12)
    sigma = 0.3
    policy = NoisyOptimalPolicy(solution, sigma)
    # Half of the normal's mass, minus the far tail below -1, is kept.
    kept = 0.5 - stats.norm.cdf(-2.0 / sigma)
    at_upper = policy.density(np.array([-1.0]), 0, np.array([[1.0]]))[0]
    assert at_upper == pytest.approx(stats.norm.pdf(0.0) / sigma / kept, rel=1e-9)
    assert at_upper == pytest.approx(2.0 / (sigma * np.sqrt(2 * np.pi)), rel=1e-9)
    at_lower = policy.density(np.array([-1.0]), 0, np.array([-1.0]))[0]
    assert at_lower == pytest.approx(stats.norm.pdf(2.0 / sigma) / sigma / kept, rel=1e-6)
    assert at_lower > 0.0
    assert policy.density(np.array([-1.0]), 0, np.array([1.0 + 1e-9]))[0] == 0.0
    assert policy.density(np.array([-1.0]), 0, np.array([-1.0 - 1e-9]))[0] == 0.0


def test_round_trip_through_json(task: Nav1DTask, solution: Nav1DSolution) -> None:
    rng = np.random.default_rng(0)
    states = rng.uniform(-1, 1, 64)
    actions = rng.uniform(-1, 1, 64)
    for policy in _policies(solution):
        rebuilt = policy_from_dict(json.loads(json.dumps(policy.to_dict())), task)
        assert type(rebuilt) is type(policy)
        assert rebuilt.to_dict() == policy.to_dict()
        for t in (0, 5):
            np.testing.assert_array_equal(
                rebuilt.density(states, t, actions), policy.density(states, t, actions)
            )


def test_policy_from_dict_errors(task: Nav1DTask, solution: Nav1DSolution) -> None:
    with pytest.raises(ValueError, match="gaussian_mixture"):
        policy_from_dict({"type": "gaussian_mixture"}, task)
    stored = NoisyOptimalPolicy(solution, 0.1).to_dict()
    other = Nav1DTask.from_params(horizon=6, reward_seed=4)
    with pytest.raises(ValueError, match="task"):
        policy_from_dict(stored, other)


def test_descriptions_and_dicts(solution: Nav1DSolution) -> None:
    assert UniformPolicy().describe() == "uniform random actions on [-1, 1]"
    assert UniformPolicy().to_dict() == {"type": "uniform", "low": -1.0, "high": 1.0}
    noisy = NoisyOptimalPolicy(solution, 0.25)
    assert "0.25" in noisy.describe() and "truncated to [-1, 1]" in noisy.describe()
    assert noisy.to_dict()["type"] == "noisy_optimal"
    assert noisy.to_dict()["grid_per_step"] == 20


def test_invalid_parameters(solution: Nav1DSolution) -> None:
    with pytest.raises(ValueError, match="low"):
        UniformPolicy(0.5, 0.5)
    with pytest.raises(ValueError, match="low"):
        UniformPolicy(-2.0, 1.0)
    with pytest.raises(ValueError, match="noise_std"):
        NoisyOptimalPolicy(solution, 0.0)


def test_uniform_samples_stay_in_a_non_float32_support() -> None:
    class EndsGenerator:
        """Stand-in generator whose draws are exactly the support's ends."""

        def uniform(self, low: float, high: float, size: tuple[int, int]) -> np.ndarray:
            return np.array([[low], [high]])

    policy = UniformPolicy(-0.3, 0.1)  # neither end is a float32 number
    actions = policy.sample(np.zeros(2), 0, EndsGenerator())  # type: ignore[arg-type]
    # Plain float32 rounding would put -0.3 just below the support, where the density is 0.
    np.testing.assert_array_equal(policy.density(np.zeros(2), 0, actions), [2.5, 2.5])


def test_noisy_policy_concentrates_on_the_optimal_action(solution: Nav1DSolution) -> None:
    states = np.linspace(-0.9, 0.9, 7)
    actions = NoisyOptimalPolicy(solution, 1e-4).sample(states, 3, np.random.default_rng(0))
    np.testing.assert_allclose(actions[:, 0], solution.optimal_action(states, 3), atol=1e-3)
