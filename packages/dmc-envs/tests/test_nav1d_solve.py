"""Tests for the Nav1D dynamic-programming solver."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dmc_envs.nav1d import Nav1DEnv, Nav1DSolution, Nav1DTask, UniformPolicy, rollout, solve


@pytest.fixture(scope="module")
def task() -> Nav1DTask:
    return Nav1DTask.from_params()


@pytest.fixture(scope="module")
def solution(task: Nav1DTask) -> Nav1DSolution:
    return solve(task)


def _brute_force(task: Nav1DTask, start: float, moves: np.ndarray) -> float:
    """Best return over all action sequences drawn from ``moves`` (exhaustive search)."""
    best = -np.inf
    for seq in itertools.product(moves, repeat=task.horizon):
        s, total = start, 0.0
        for t, a in enumerate(seq):
            s = float(task.next_state(s, a))
            total += float(task.reward(t, s))
        best = max(best, total)
    return best


@pytest.mark.parametrize("seed", [0, 5])
def test_dp_equals_brute_force_on_a_tiny_instance(seed: int) -> None:
    task = Nav1DTask.from_params(
        horizon=3, step_size=0.2, reward_width=0.1, reward_width_spread=0.5, reward_seed=seed
    )
    k = 2
    sol = solve(task, grid_per_step=k)
    np.testing.assert_allclose(sol.grid, np.linspace(-1, 1, 21), atol=1e-15)
    # Actions j / k move grid points onto grid points (or clip onto +-1, also grid points).
    moves = np.arange(-k, k + 1) / k
    for i in range(0, sol.grid.size, 2):
        start = float(sol.grid[i])
        assert abs(sol.values[0, i] - _brute_force(task, start, moves)) <= 1e-9


def test_non_dividing_step_uses_two_mirrored_lattices() -> None:
    # 2 / (0.3 / 2) is not an integer, so neither lattice alone reaches both ends.
    task = Nav1DTask.from_params(horizon=3, step_size=0.3, reward_width=0.1, reward_seed=2)
    sol = solve(task, grid_per_step=2)
    grid, half = sol.grid, sol.half_window
    assert grid[0] == -1.0 and grid[-1] == 1.0 and np.all(np.diff(grid) > 0)
    assert half == 4
    # Every gamma-window is exactly `half` indices either side.
    np.testing.assert_allclose(grid[half:] - grid[:-half], 0.3, atol=1e-12)
    # Brute force over all grid paths (i, p1, p2, p3) whose consecutive points are within one
    # step, enumerated as one (n, n, n, n) array rather than by sliding windows.
    reach = np.abs(grid[:, None] - grid[None, :]) <= 0.3 + 1e-12
    r0, r1, r2 = (task.reward(t, grid) for t in range(3))
    total = r0[None, :, None, None] + r1[None, None, :, None] + r2[None, None, None, :]
    feasible = reach[:, :, None, None] & reach[None, :, :, None] & reach[None, None, :, :]
    best = np.where(feasible, total, -np.inf).max(axis=(1, 2, 3))
    np.testing.assert_allclose(sol.values[0], best, rtol=0, atol=1e-9)


def test_default_grid(task: Nav1DTask) -> None:
    sol = solve(task)
    assert sol.grid.size == 401 and sol.half_window == 40
    np.testing.assert_allclose(np.diff(sol.grid), 0.005, atol=1e-12)
    assert sol.values.shape == (17, 401) and sol.random_values.shape == (17, 401)
    np.testing.assert_array_equal(sol.values[-1], 0.0)
    # The optimum dominates the random policy everywhere and is bounded by H.
    assert np.all(sol.values >= sol.random_values - 1e-12)
    assert np.all(sol.values[0] <= 16.0)


def test_optimal_policy_in_the_env_achieves_the_dp_values(solution: Nav1DSolution) -> None:
    rng = np.random.default_rng(0)
    n = 200
    # Stratified uniform starts: random, yet a low-variance estimate of the uniform average.
    starts = -1.0 + 2.0 * (np.arange(n) + rng.uniform(size=n)) / n
    env = Nav1DEnv()
    returns = np.empty(n)
    for i, start in enumerate(starts):
        _, info = env.reset(options={"start": float(start)})
        total, truncated = 0.0, False
        while not truncated:
            action = solution.optimal_action(info["state"], info["t"])
            _, reward, _, truncated, info = env.step(np.array([action], np.float32))
            total += reward
        returns[i] = total
    values = solution.optimal_value(starts)
    np.testing.assert_allclose(returns, values, rtol=1e-3)
    assert abs(returns.mean() / solution.optimal_return() - 1.0) < 0.01
    np.testing.assert_allclose(solution.normalized_score(returns).mean(), 100.0, atol=1.0)


def test_random_return_matches_monte_carlo(task: Nav1DTask, solution: Nav1DSolution) -> None:
    rng = np.random.default_rng(1)
    episodes = 200_000
    data = rollout(task, UniformPolicy(), rng.uniform(-1, 1, episodes), rng)
    returns = data["rewards"].astype(np.float64).reshape(episodes, task.horizon).sum(axis=1)
    stderr = returns.std(ddof=1) / np.sqrt(episodes)
    assert abs(returns.mean() - solution.random_return()) < 3 * stderr
    score = solution.normalized_score(returns.mean())
    assert isinstance(score, float)
    scale = 100.0 / (solution.optimal_return() - solution.random_return())
    assert abs(score) < 3 * stderr * scale


def test_start_interval_averages(solution: Nav1DSolution) -> None:
    whole = solution.optimal_return()
    halves = 0.5 * (solution.optimal_return(-1.0, 0.0) + solution.optimal_return(0.0, 1.0))
    assert whole == pytest.approx(halves, rel=1e-12)
    assert solution.optimal_return(0.3, 0.3) == pytest.approx(float(solution.optimal_value(0.3)))
    # Off-grid ends: compare with a fine quadrature of the interpolated value function.
    xs = np.linspace(-0.3331, 0.4127, 200_001)
    ys = solution.optimal_value(xs)
    expected = np.sum(0.5 * (ys[1:] + ys[:-1]) * np.diff(xs)) / (xs[-1] - xs[0])
    assert solution.optimal_return(-0.3331, 0.4127) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="start_low"):
        solution.random_return(0.5, -0.5)


@pytest.mark.parametrize("step_size", [0.2, 0.3])
def test_greedy_action_attains_the_bellman_maximum_on_the_grid(step_size: float) -> None:
    task = Nav1DTask.from_params(horizon=8, step_size=step_size, reward_width_spread=0.5)
    sol = solve(task, grid_per_step=8)
    for t in range(task.horizon):
        reached = task.next_state(sol.grid, sol.optimal_action(sol.grid, t))
        achieved = task.reward(t, reached) + sol.optimal_value(reached, t + 1)
        np.testing.assert_allclose(achieved, sol.values[t], rtol=0, atol=1e-9)


def test_optimal_action_shape_and_range(solution: Nav1DSolution) -> None:
    states = np.linspace(-1, 1, 12).reshape(3, 4)
    actions = solution.optimal_action(states, 5)
    assert actions.shape == (3, 4) and np.all(np.abs(actions) <= 1.0)
    with pytest.raises(ValueError, match="t must be"):
        solution.optimal_action(states, 16)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_solve_rejects_bad_grid_per_step(task: Nav1DTask, bad: object) -> None:
    with pytest.raises(ValueError, match="grid_per_step"):
        solve(task, grid_per_step=bad)  # type: ignore[arg-type]
