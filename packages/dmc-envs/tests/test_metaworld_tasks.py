"""The MetaWorld family (`dmc_envs.tasks.metaworld`): experts that succeed, seeded random
positions, success reported through the vector env, datasets with exact behaviour densities.

The task contract itself (spaces, seeding, returns, a tiny collection) is checked for every
MetaWorld task by tests/test_task_contract.py.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from dmc_core.data import TransitionDataset, read_dataset, write_dataset
from dmc_core.errors import ConfigError
from dmc_envs.statistics import dataset_statistics
from dmc_envs.tasks import CollectSpec, build_task, task_for_dataset
from dmc_envs.tasks.metaworld import ENV_NAMES, MetaWorldTask
from dmc_envs.tasks.metaworld_behaviour import NoisyScriptedPolicy

pytest.importorskip("metaworld")

#: Observation columns of the main object's position and of the goal.
OBJECT, GOAL = slice(4, 7), slice(36, 39)


@functools.cache
def _task(name: str) -> MetaWorldTask:
    task = build_task(name)
    assert isinstance(task, MetaWorldTask)
    return task


def _positions(name: str, seed: int, num_envs: int = 3) -> np.ndarray:
    """Object and goal positions of a fresh vector env's first episodes. Shapes: -> (n, 6)."""
    envs = _task(name).make_vector_env(num_envs)
    obs, _ = envs.reset(seed=seed)
    envs.close()
    return np.concatenate([obs[:, OBJECT], obs[:, GOAL]], axis=1)


def _start_observation(name: str, seed: int) -> np.ndarray:
    envs = _task(name).make_vector_env(1)
    obs, _ = envs.reset(seed=seed)
    envs.close()
    return obs[0]


@pytest.mark.parametrize("name", sorted(ENV_NAMES))
def test_the_noisy_expert_succeeds_in_most_episodes(name: str) -> None:
    # The expert recipe (scripted policy + truncated Gaussian noise of std 0.1): a scripted
    # policy that reads the wrong observation columns, or noise that swamps it, fails here.
    _, attrs = _task(name).collect(CollectSpec("expert", 4, 0, seed=10, options={}))
    assert attrs["success_rate"] >= 0.75, attrs


@pytest.mark.parametrize("name", sorted(ENV_NAMES))
def test_positions_are_drawn_per_episode_from_the_reset_seed(name: str) -> None:
    first = _positions(name, seed=7)
    np.testing.assert_array_equal(first, _positions(name, seed=7))
    assert not np.allclose(first, _positions(name, seed=8), atol=1e-3)
    # env i is seeded seed + i: the envs of one batch start at different positions.
    assert not np.allclose(first[0], first[1], atol=1e-3)
    # The next episode of an env draws a new position (autoreset continues its generator).
    envs = _task(name).make_vector_env(1)
    envs.reset(seed=7)
    again, _ = envs.reset()
    envs.close()
    assert not np.allclose(np.concatenate([again[0, OBJECT], again[0, GOAL]]), first[0], atol=1e-3)


def test_success_reaches_the_vector_env() -> None:
    task = _task("button-press")
    policy = NoisyScriptedPolicy(task.env_name, 0.01, 0.0, *task.action_bounds())
    rng = np.random.default_rng(0)
    envs = task.make_vector_env(2)
    obs, _ = envs.reset(seed=3)
    reported = np.zeros(2, dtype=bool)
    for _ in range(task.max_episode_steps):
        obs, _, _, truncated, info = envs.step(policy.sample(obs, rng).astype(np.float32))
        assert all(envs.single_observation_space.contains(row) for row in obs)
        reported |= np.asarray(info.get("success", np.zeros(2)), dtype=bool)
        if reported.all() or truncated.any():
            break
    envs.close()
    assert reported.all()


def test_the_density_integrates_to_one_and_peaks_at_the_scripted_action() -> None:
    task = _task("drawer-open")
    low, high = task.action_bounds()
    policy = NoisyScriptedPolicy(task.env_name, 0.3, 0.2, low, high)
    state = _start_observation("drawer-open", seed=4)
    rng = np.random.default_rng(0)
    # Monte Carlo over the box: volume x mean density.
    uniform = rng.uniform(low, high, size=(100_000, low.size))
    states = np.broadcast_to(state, (len(uniform), state.size))
    integral = np.prod(high - low) * policy.density(states, uniform).mean()
    assert integral == pytest.approx(1.0, abs=0.03)
    # The sampler draws from that density: E_p[u(a) / p(a)] = 1 for u uniform on the box.
    drawn = policy.sample(states[:20_000], rng)
    weights = 1.0 / (np.prod(high - low) * policy.density(states[:20_000], drawn))
    assert weights.mean() == pytest.approx(1.0, abs=0.03)
    # Higher at the scripted action than half a box away from it.
    mean = policy.means(state[None])
    away = np.where(mean > 0.0, mean - 1.0, mean + 1.0)
    density_at = policy.density(np.stack([state, state]), np.concatenate([mean, away]))
    assert density_at[0] > 10.0 * density_at[1]
    assert np.all(policy.density(state[None], np.full((1, low.size), 1.5)) == 0.0)


def test_expert_and_medium_datasets_round_trip_with_their_densities(tmp_path) -> None:
    task = _task("drawer-open")
    rates = {}
    for kind in ("expert", "medium"):
        options = {"noise_std": 0.3, "random_fraction": 0.8} if kind == "medium" else {}
        collected, recipe = task.collect(CollectSpec(kind, 8, 0, seed=3, options=options))
        attrs = {**task.provenance(), "dataset_kind": kind, "seed": 3, **recipe}
        path = write_dataset(
            tmp_path / f"{kind}.hdf5", TransitionDataset(**collected.arrays(), attrs=attrs)
        )
        dataset = read_dataset(path)
        assert dataset.num_episodes == 8 and len(dataset) == 8 * task.max_episode_steps
        assert dataset.attrs["behavior_policy_spec"] == recipe["behavior_policy_spec"]
        assert task_for_dataset(dataset.attrs, str(path)).name == "drawer-open"
        density = task.behaviour_density(dataset.attrs)
        values = density.density(dataset.observations[:500], dataset.actions[:500])
        assert np.all(np.isfinite(values)) and np.all(values > 0.0)
        stats = dataset_statistics(dataset, task.returns)
        assert stats["success_rate"] == recipe["success_rate"]
        assert stats["return_mean"] == pytest.approx(recipe["return_mean"], rel=1e-5)
        rates[kind] = recipe["success_rate"]
    # The recipe's point: the medium data succeeds far less often than the expert's.
    assert rates["medium"] <= rates["expert"] - 0.5, rates


def test_a_cut_collection_ends_in_a_timeout_and_counts_the_kept_rows() -> None:
    task = _task("plate-slide")
    dataset, attrs = task.collect(CollectSpec("uniform", 0, 1234, seed=1, options={}))
    assert len(dataset) == 1234 and dataset.timeouts[-1]
    assert dataset.num_episodes == 3
    assert attrs["behavior_policy_spec"]["type"] == "uniform"


def test_mistakes_are_named() -> None:
    task = _task("sweep-into")
    with pytest.raises(ConfigError, match="expert, medium, uniform"):
        task.collect(CollectSpec("noisy_optimal", 1, 0, seed=0, options={}))
    with pytest.raises(ConfigError, match="noise_std"):
        task.collect(CollectSpec("expert", 1, 0, seed=0, options={"noise_std": 0.0}))
    with pytest.raises(ConfigError, match="random_fraction"):
        task.collect(CollectSpec("medium", 1, 0, seed=0, options={"random_fraction": 1.5}))
    with pytest.raises(ConfigError, match="env_kwargs"):
        build_task("sweep-into", {"render_mode": "rgb_array"})
