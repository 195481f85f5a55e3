"""Tests for the MuJoCo locomotion tasks: dynamics gaps, the uniform collection, the registry."""

from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pytest

from dmc_core.errors import ConfigError
from dmc_envs.tasks import mujoco as mujoco_tasks
from dmc_envs.tasks.base import CollectSpec, UniformBoxDensity
from dmc_envs.tasks.mujoco import LocomotionTask
from dmc_envs.tasks.registry import build_task, task_for_dataset

NAMES = ("hopper", "halfcheetah", "walker2d")
ENV_IDS = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5"}


@functools.cache
def _task(name: str) -> LocomotionTask:
    task = build_task(name)
    assert isinstance(task, LocomotionTask)
    return task


def _spec(transitions: int, episodes: int = 0, behaviour: str = "uniform") -> CollectSpec:
    return CollectSpec(behaviour, episodes=episodes, transitions=transitions, seed=0, options={})


def _env_transitions(task: LocomotionTask, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(s, a, s') of one env under uniform actions, in float64 as the env gives them.

    Shapes:
        -> (count, obs_dim), (count, act_dim), (count, obs_dim).
    """
    envs = task.make_vector_env(1)
    low, high = task.action_bounds()
    rng = np.random.default_rng(0)
    obs, _ = envs.reset(seed=0)
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    resetting = False
    while len(rows) < count:
        action = rng.uniform(low, high, size=(1, low.size))
        next_obs, _, terminated, truncated, _ = envs.step(action)
        if not resetting:
            rows.append((obs[0], action[0], next_obs[0]))
        resetting = bool(terminated[0] or truncated[0])
        obs = next_obs
    envs.close()
    states, actions, next_states = (np.stack(column) for column in zip(*rows, strict=True))
    return states, actions, next_states


@pytest.mark.parametrize("name", NAMES)
def test_real_transitions_have_no_gap_and_perturbed_ones_do(name: str) -> None:
    task = _task(name)
    dynamics = task.dynamics
    assert dynamics is not None
    states, actions, next_states = _env_transitions(task, 300)
    plans = np.stack([states, next_states], axis=1)  # (N, 2, obs_dim)
    gaps = dynamics.gaps(plans, actions[:, None, :])
    assert gaps.shape == (300, 1)
    # A start with a velocity at the observation's clip is not fully observed (Walker2d).
    exact = task.dynamics.exact(plans)[:, 0]
    assert exact.sum() >= 50
    assert gaps[exact].max() < 1e-5
    assert np.isnan(gaps[~exact]).all()  # not measurable: skipped by planner coherency
    perturbed = plans.copy()
    perturbed[:, 1, 0] += 0.1
    assert dynamics.gaps(perturbed, actions[:, None, :])[exact].min() > 0.01


def test_gaps_of_batched_plans_and_their_shapes() -> None:
    task = _task("hopper")
    states, actions, next_states = _env_transitions(task, 40)
    # Consecutive env rows form a plan only inside an episode: the first 8 are one.
    assert np.array_equal(next_states[:7], states[1:8]), "hopper fell within 8 steps"
    plan_states = np.concatenate([states[:8], next_states[7:8]])  # (9, obs_dim)
    batch_states = np.broadcast_to(plan_states, (2, 3, 9, plan_states.shape[1]))
    for width in (8, 9):  # H - 1 actions, or H with the last one unused
        plan_actions = np.concatenate([actions[:8], actions[:1]])[:width]
        batch_actions = np.broadcast_to(plan_actions, (2, 3, width, actions.shape[1]))
        gaps = task.dynamics.gaps(batch_states, batch_actions)
        assert gaps.shape == (2, 3, 8)
        assert gaps.max() < 1e-5
    with pytest.raises(ValueError, match="states must be"):
        task.dynamics.gaps(plan_states[:, :3], actions[:8])
    with pytest.raises(ValueError, match="at least two states"):
        task.dynamics.gaps(plan_states[:1], actions[:1])


def test_walker2d_clipped_velocities_are_flagged() -> None:
    task = _task("walker2d")
    states, _, next_states = _env_transitions(task, 300)
    exact = task.dynamics.exact(np.stack([states, next_states], axis=1))[:, 0]
    at_clip = np.any(np.abs(states[:, 8:]) >= 10.0, axis=1)
    np.testing.assert_array_equal(exact, ~at_clip)
    assert at_clip.any(), "uniform actions drive some Walker2d joint past 10 rad/s"


def test_collection_has_exactly_the_transitions_asked_for() -> None:
    task = _task("halfcheetah")
    # HalfCheetah never terminates: 4 envs end 1000-step episodes together; 1500 rows keep one
    # whole episode and cut the next.
    dataset, _ = task.collect(_spec(1500))
    dataset.validate(require_attrs=False)
    assert len(dataset) == 1500
    lengths = [part.stop - part.start for part in dataset.episode_slices()]
    assert lengths == [1000, 500]
    assert dataset.timeouts[999] and dataset.timeouts[-1] and not dataset.terminals.any()
    assert dataset.observations.dtype == np.float32 and dataset.rewards.dtype == np.float32
    assert dataset.terminals.dtype == np.bool_ and dataset.timeouts.dtype == np.bool_


def test_hopper_collection_cuts_its_last_episode_with_a_timeout() -> None:
    task = _task("hopper")
    dataset, attrs = task.collect(_spec(500))
    dataset.validate(require_attrs=False)
    assert len(dataset) == 500
    lengths = [part.stop - part.start for part in dataset.episode_slices()]
    assert sum(lengths) == 500 and max(lengths) <= 1000
    # Hopper falls: every whole episode ends by a terminal; the cut one by a timeout.
    assert dataset.terminals[dataset.episode_ends[:-1]].all()
    assert dataset.timeouts[-1] and not dataset.terminals[-1]
    low, high = task.action_bounds()
    assert attrs["behavior_policy_spec"] == UniformBoxDensity(low, high).to_dict()
    density = task.behaviour_density(attrs)
    assert density is not None
    np.testing.assert_allclose(density.density(dataset.observations, dataset.actions), 1 / 8)


def test_collection_by_episodes_and_its_determinism() -> None:
    task = _task("walker2d")
    first, _ = task.collect(_spec(0, episodes=6))
    again, _ = task.collect(_spec(0, episodes=6))
    first.validate(require_attrs=False)
    assert first.num_episodes == 6
    for key, array in first.arrays().items():
        np.testing.assert_array_equal(array, getattr(again, key), err_msg=key)


def test_collection_needs_something_to_collect() -> None:
    with pytest.raises(ConfigError, match="transitions > 0 or episodes > 0"):
        _task("hopper").collect(_spec(0, episodes=0))


def test_unknown_behaviour_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="noisy_optimal") as err:
        _task("hopper").collect(_spec(100, behaviour="noisy_optimal"))
    assert "hopper" in str(err.value) and "uniform" in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_registry_builds_each_task(name: str) -> None:
    task = build_task(name)
    assert task.name == name and task.env_id == ENV_IDS[name]
    assert task.max_episode_steps == 1000 and task.success is False
    assert task.differentiable_dynamics is None and task.plan_reward is None
    assert "D4RL" in task.returns.source


def test_reference_scores_are_d4rl_s() -> None:
    assert (_task("hopper").returns.low, _task("hopper").returns.high) == (-20.272305, 3234.3)
    cheetah = _task("halfcheetah").returns
    assert (cheetah.low, cheetah.high) == (-280.178953, 12135.0)
    assert (_task("walker2d").returns.low, _task("walker2d").returns.high) == (1.629008, 4592.3)


def test_task_for_dataset_finds_hopper() -> None:
    task = task_for_dataset({"env_id": "Hopper-v5"}, "x")
    assert task.name == "hopper"
    recorded = task_for_dataset(
        {"env_id": "Hopper-v5", "ref_min_score": -10.0, "ref_max_score": 10.0}, "x"
    )
    assert (recorded.returns.low, recorded.returns.high) == (-10.0, 10.0)


def test_env_kwargs_reach_the_env_and_bad_ones_are_refused() -> None:
    task = build_task("hopper", {"exclude_current_positions_from_observation": False})
    envs = task.make_vector_env(2)
    assert envs.single_observation_space.shape == (12,)
    envs.close()
    states, actions, next_states = _env_transitions(task, 20)
    gaps = task.dynamics.gaps(np.stack([states, next_states], axis=1), actions[:, None, :])
    assert gaps.max() < 1e-5
    with pytest.raises(ConfigError, match="no_such_option"):
        build_task("hopper", {"no_such_option": 1})


def test_missing_mujoco_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = mujoco_tasks.importlib.import_module

    def without_mujoco(module: str) -> object:
        if module == "mujoco":
            raise ModuleNotFoundError("No module named 'mujoco'", name="mujoco")
        return real_import(module)

    monkeypatch.setattr(mujoco_tasks.importlib, "import_module", without_mujoco)
    with pytest.raises(ConfigError, match=r"needs the module 'mujoco'.*\[mujoco\]"):
        build_task("walker2d")


def test_the_module_imports_without_loading_mujoco() -> None:
    code = (
        "import sys, dmc_envs.tasks.registry as r; r.families(); "
        "assert 'mujoco' not in sys.modules, 'mujoco imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", NAMES)
def test_the_env_clips_actions_beyond_the_box_before_the_control_cost(name: str) -> None:
    task = _task(name)
    high = task.action_bounds()[1]
    outcomes = []
    for scale in (1.0, 5.0):  # the box's corner, and far beyond it
        envs = task.make_vector_env(1)
        envs.reset(seed=3)
        obs, reward, *_ = envs.step((high * scale)[None])
        envs.close()
        outcomes.append((obs, reward))
    np.testing.assert_array_equal(outcomes[0][0], outcomes[1][0])
    np.testing.assert_array_equal(outcomes[0][1], outcomes[1][1])
