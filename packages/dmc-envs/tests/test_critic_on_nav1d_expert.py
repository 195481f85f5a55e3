"""IQL on the real Nav1D `expert` dataset ranks the true returns of held-out pairs.

The dataset is collected exactly as `make_dataset@expert` collects it (the DP-optimal action
plus truncated-normal noise, std 0.2, uniform starts); 10% of the episodes are held out.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr

from dmc_core.data import TransitionDataset
from dmc_core.seeding import torch_generator
from dmc_core.testing import torch_threads
from dmc_critic import (
    CriticSpec,
    CriticTrainSpec,
    TransitionSampler,
    build_critic,
    fit_iql,
    returns_to_go,
)
from dmc_envs.nav1d import Nav1DTask, NoisyOptimalPolicy, rollout, solve


def expert_episodes(episodes: int, seed: int) -> dict[str, np.ndarray]:
    task = Nav1DTask.from_params()
    rng = np.random.default_rng(seed)
    policy = NoisyOptimalPolicy(solve(task), noise_std=0.2)
    return rollout(task, policy, rng.uniform(-1.0, 1.0, size=episodes), rng)


def rows(arrays: dict[str, np.ndarray], episodes: slice, horizon: int = 16) -> TransitionDataset:
    part = slice(episodes.start * horizon, episodes.stop * horizon)
    return TransitionDataset(**{k: v[part] for k, v in arrays.items()}, attrs={})


def test_iql_ranks_held_out_returns_of_the_nav1d_expert_dataset() -> None:
    arrays = expert_episodes(1000, seed=3)
    train, held_out = rows(arrays, slice(0, 900)), rows(arrays, slice(900, 1000))
    spec = CriticSpec(hidden=64, train=CriticTrainSpec(batch_size=256, lr=1e-3))
    with torch_threads(1):
        torch.manual_seed(0)
        critic = build_critic(spec, train)
        fit_iql(critic, TransitionSampler(train, spec), spec.train, torch_generator(0), 1500)
        with torch.no_grad():
            q = critic.q(
                torch.from_numpy(held_out.observations), torch.from_numpy(held_out.actions)
            )
    rho = spearmanr(q.numpy(), returns_to_go(held_out, 1.0)).statistic
    print(f"Spearman of Q with held-out returns-to-go: {rho:.3f}")
    assert rho >= 0.8, f"Spearman {rho:.3f}"
