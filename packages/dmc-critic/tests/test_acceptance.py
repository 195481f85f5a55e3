"""Acceptance: a trained IQL critic ranks the true returns of held-out expert state-actions.

The task is Nav1D-like, built here (dmc-critic does not depend on dmc-envs): position s in
[-1, 1], observation (s, t/H), s' = clip(s + 0.2 a), reward a Gaussian bump around a moving mean.

Returns-to-go fall with time, so ranking them over all rows mostly rewards knowing the time left
(a critic that learned only t/H would already score about 0.998 here). The test therefore also
asks for ranking *within* each time step, where only (s, a) can explain the return: the mean
per-step Spearman of the exact expected return (Monte Carlo, 256 rollouts per row) against the
realised returns is 0.39 on this data (future noise makes single returns noisy), a time-only
critic scores 0, and the trained critic about 0.35.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from scipy.stats import spearmanr

from dmc_core.data import TransitionDataset
from dmc_core.seeding import torch_generator
from dmc_critic import (
    CriticSpec,
    CriticTrainSpec,
    TransitionSampler,
    build_critic,
    fit_iql,
    returns_to_go,
)

HORIZON = 16
STEP = 0.2
WIDTH = 0.15


def _bump_means(rng: np.random.Generator) -> np.ndarray:
    # A random walk of reward centres, each within one step of the last, so an agent can follow.
    steps = rng.uniform(-STEP, STEP, size=HORIZON)
    return np.clip(np.cumsum(steps), -0.8, 0.8)


def _expert_nav_dataset(episodes: int, seed: int) -> TransitionDataset:
    """A Nav1D-like task (obs (s, t/H)) with a noisy greedy expert, episodes stored in order."""
    rng = np.random.default_rng(seed)
    means = _bump_means(rng)
    s = rng.uniform(-0.3, 0.3, size=episodes)
    obs, act, rew, next_obs = [], [], [], []
    for t in range(HORIZON):
        greedy = np.clip((means[t] - s) / STEP, -1.0, 1.0)
        a = np.clip(greedy + rng.normal(0.0, 0.2, size=episodes), -1.0, 1.0)
        s_next = np.clip(s + STEP * a, -1.0, 1.0)
        obs.append(np.stack([s, np.full(episodes, t / HORIZON)], axis=1))
        next_obs.append(np.stack([s_next, np.full(episodes, (t + 1) / HORIZON)], axis=1))
        act.append(a[:, None])
        rew.append(np.exp(-((s_next - means[t]) ** 2) / (2 * WIDTH**2)))
        s = s_next

    def rows(parts: list[np.ndarray]) -> np.ndarray:
        # (H, E, ...) -> episode-major rows (E * H, ...).
        return np.swapaxes(np.stack(parts), 0, 1).reshape(episodes * HORIZON, -1).squeeze()

    timeouts = np.zeros((episodes, HORIZON), dtype=bool)
    timeouts[:, -1] = True
    return TransitionDataset(
        observations=rows(obs).astype(np.float32),
        actions=rows(act).reshape(-1, 1).astype(np.float32),
        rewards=rows(rew).astype(np.float32),
        terminals=np.zeros(episodes * HORIZON, dtype=bool),
        timeouts=timeouts.reshape(-1),
        next_observations=rows(next_obs).astype(np.float32),
        attrs={"env_id": "nav-test", "dataset_kind": "expert", "behavior_policy": "greedy"},
    )


def _split(dataset: TransitionDataset, train_episodes: int) -> tuple[TransitionDataset, ...]:
    cut = train_episodes * HORIZON
    arrays = dataset.arrays()
    head = TransitionDataset(**{k: v[:cut] for k, v in arrays.items()})
    tail = TransitionDataset(**{k: v[cut:] for k, v in arrays.items()})
    return head, tail


def test_iql_q_ranks_held_out_expert_returns(one_thread: None) -> None:
    started = time.perf_counter()
    dataset = _expert_nav_dataset(episodes=1000, seed=0)
    dataset.validate(require_attrs=False)
    train, held_out = _split(dataset, train_episodes=900)
    spec = CriticSpec(
        expectile=0.9,
        discount=1.0,
        terminal_on_timeout=True,
        hidden=64,
        train=CriticTrainSpec(batch_size=256, lr=1e-3),
    )
    torch.manual_seed(0)
    critic = build_critic(spec, train)
    # 1500 steps of a 64-wide critic: about 8 s on one thread, enough for both thresholds.
    losses = fit_iql(critic, TransitionSampler(train, spec), spec.train, torch_generator(0), 1500)
    with torch.no_grad():
        q = critic.q(torch.from_numpy(held_out.observations), torch.from_numpy(held_out.actions))
    returns = returns_to_go(held_out, 1.0)
    rho = spearmanr(q.numpy(), returns).statistic
    rho_within = _mean_spearman_within_steps(q.numpy(), returns, held_out.observations[:, 1])
    elapsed = time.perf_counter() - started
    report = f"Spearman {rho:.3f}, within steps {rho_within:.3f}, {elapsed:.1f}s"
    print(report)
    assert np.isfinite(losses).all(), report
    assert rho >= 0.8, report
    assert rho_within >= 0.2, report


def _mean_spearman_within_steps(q: np.ndarray, returns: np.ndarray, phase: np.ndarray) -> float:
    per_step = [spearmanr(q[phase == t], returns[phase == t]).statistic for t in np.unique(phase)]
    return float(np.mean(per_step))
