"""The baseline policies: AWR's weights, the Gaussian policy, its checkpoints, what it learns.

On a one-step bandit whose reward peaks at a = 0.5 and whose data mixes actions near 0.5 with bad
ones in [-1, 0], behaviour cloning's mean lands between the two and IQL's policy (AWR on a fitted
IQL critic) near the good action: both beat a uniform random policy, and AWR beats BC, which is
what a wrong advantage weighting (sign, missing exp, weights not applied) would break.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from dmc_core.data import TransitionDataset
from dmc_core.errors import CheckpointError
from dmc_core.seeding import torch_generator
from dmc_core.training import World
from dmc_critic import (
    CriticSpec,
    CriticTrainSpec,
    TransitionBatch,
    TransitionSampler,
    build_critic,
    fit_iql,
    save_critic,
)
from dmc_critic.fit_policy import PolicyRun
from dmc_critic.policies import (
    PolicySpec,
    PolicyTrainSpec,
    advantage_weights,
    build_policy,
    is_policy_checkpoint,
    load_policy,
    regression_loss,
    save_policy,
)

GOOD = 0.5
#: The expected reward of uniform random actions on [-1, 1]: 1 - (Var a + (E a - GOOD)^2).
RANDOM_REWARD = 1.0 - (1.0 / 3.0 + GOOD**2)


def reward(action: np.ndarray) -> np.ndarray:
    """The bandit's reward: highest, 1, at the good action."""
    return 1.0 - (action - GOOD) ** 2


def mixed_bandit(rows: int = 512) -> TransitionDataset:
    """One-step episodes, states uniform on [-1, 1]; half the actions near the good one (std
    0.1), half bad ones uniform on [-1, 0]."""
    rng = np.random.default_rng(0)
    good = rng.random(rows) < 0.5
    near = np.clip(rng.normal(GOOD, 0.1, rows), -1.0, 1.0)
    actions = np.where(good, near, rng.uniform(-1.0, 0.0, rows)).astype(np.float32)[:, None]
    obs = rng.uniform(-1.0, 1.0, (rows, 1)).astype(np.float32)
    return TransitionDataset(
        observations=obs,
        actions=actions,
        rewards=reward(actions[:, 0]).astype(np.float32),
        terminals=np.ones(rows, dtype=bool),
        timeouts=np.zeros(rows, dtype=bool),
        next_observations=obs.copy(),
        attrs={"env_id": "bandit", "dataset_kind": "mixed"},
    )


class LinearCritic:
    """Q(s, a) = a (first action dimension), V(s) = 0: the advantage is the action."""

    def q(self, obs: Tensor, act: Tensor) -> Tensor:
        return act[:, 0]

    def v(self, obs: Tensor) -> Tensor:
        return torch.zeros(obs.shape[0])


def batch_of(actions: list[float]) -> TransitionBatch:
    act = torch.tensor(actions)[:, None]
    zeros = torch.zeros(len(actions))
    return TransitionBatch(
        torch.zeros_like(act), act, zeros, torch.zeros_like(act), zeros, torch.ones_like(zeros)
    )


def small(kind: str, **train: float) -> PolicySpec:
    schedule = {"steps": 40, "batch_size": 16, "checkpoint_every": 10, "log_every": 5} | train
    return PolicySpec(kind=kind, hidden=16, train=PolicyTrainSpec(**schedule))


def test_awr_weights_are_exp_beta_advantage_clipped_at_the_max_weight() -> None:
    batch = batch_of([-1.0, 0.0, 0.5, 2.0, 1000.0])
    weights = advantage_weights(LinearCritic(), batch, beta=3.0, max_weight=100.0)
    expected = [math.exp(-3.0), 1.0, math.exp(1.5), 100.0, 100.0]  # exp(6) > 100: clipped
    torch.testing.assert_close(weights, torch.tensor(expected))
    flat = advantage_weights(LinearCritic(), batch, beta=0.0, max_weight=100.0)
    torch.testing.assert_close(flat, torch.ones(5))  # beta 0 is behaviour cloning


def test_bc_weighs_every_transition_one_and_awr_by_the_advantage() -> None:
    torch.manual_seed(0)
    dataset = mixed_bandit(64)
    batch = TransitionSampler(dataset, CriticSpec()).batch(torch.arange(8))
    policy = build_policy(small("bc"), dataset)
    log_prob = policy.log_prob(batch.obs, batch.act)
    loss, metrics = regression_loss(policy, batch, LinearCritic(), small("bc"))
    torch.testing.assert_close(loss, -log_prob.mean())
    assert metrics["weight_mean"] == metrics["weight_max"] == 1.0
    loss, _ = regression_loss(policy, batch, LinearCritic(), small("awr"))
    weights = torch.exp(3.0 * batch.act[:, 0]).clamp(max=100.0)
    torch.testing.assert_close(loss, -(weights * log_prob).mean())


def test_the_policy_is_a_gaussian_around_a_tanh_mean_inside_the_data_range() -> None:
    torch.manual_seed(0)
    dataset = mixed_bandit(64)
    scaled = dataclasses.replace(dataset, actions=dataset.actions * 3.0 + 1.0)  # in [-2, 4]
    policy = build_policy(small("bc"), scaled)
    obs = torch.linspace(-50.0, 50.0, 11)[:, None]
    mean = policy.mean_action(obs)
    low, high = float(scaled.actions.min()), float(scaled.actions.max())
    assert bool(((mean >= low) & (mean <= high)).all())
    with torch.no_grad():
        policy.log_std.fill_(-10.0)  # clipped to -5: std exp(-5) in normalised units
    act = torch.full((11, 1), 1.5)
    normalised = policy.act_normalizer.normalize(act)
    centre = policy.act_normalizer.normalize(mean)
    expected = torch.distributions.Normal(centre, math.exp(-5.0)).log_prob(normalised)[:, 0]
    torch.testing.assert_close(policy.log_prob(obs, act), expected)


def test_a_checkpoint_round_trips_and_is_told_apart_from_a_critic(tmp_path: Path) -> None:
    torch.manual_seed(0)
    dataset = mixed_bandit(64)
    policy = build_policy(small("awr"), dataset)
    path = save_policy(tmp_path / "model.safetensors", policy, {"steps": 0})
    loaded = load_policy(path)
    obs = torch.randn(5, 1)
    assert torch.equal(loaded.mean_action(obs), policy.mean_action(obs))
    assert loaded.spec == policy.spec and loaded.kind == "awr"
    critic = save_critic(tmp_path / "critic.safetensors", build_critic(CriticSpec(), dataset))
    assert is_policy_checkpoint(path) and not is_policy_checkpoint(critic)
    assert not is_policy_checkpoint(tmp_path / "absent.safetensors")
    with pytest.raises(CheckpointError, match=f"{critic}: not a dmc policy checkpoint"):
        load_policy(critic)


def test_on_mixed_bandit_data_bc_and_iql_beat_random_and_iql_beats_bc(
    tmp_path: Path, one_thread: None
) -> None:
    dataset = mixed_bandit()
    spec = CriticSpec(
        expectile=0.7, hidden=32, fourier_frequencies=1, train=CriticTrainSpec(lr=1e-3)
    )
    torch.manual_seed(0)
    critic = build_critic(spec, dataset)
    fit_iql(critic, TransitionSampler(dataset, spec), spec.train, torch_generator(0), steps=300)
    critic.eval()
    states = torch.linspace(-1.0, 1.0, 101)[:, None]
    scores = {}
    for kind in ("bc", "awr"):
        policy = small(kind, steps=300, batch_size=64, lr=3e-3, checkpoint_every=300)
        cpu = World(0, 1, torch.device("cpu"))
        path = PolicyRun(policy, dataset, critic, tmp_path / kind, cpu, 0, kind).train()
        with torch.no_grad():
            actions = load_policy(path).mean_action(states)[:, 0].numpy()
        scores[kind] = float(reward(actions).mean())
    print(f"expected reward: random {RANDOM_REWARD:.3f}, {scores}")
    assert scores["bc"] > RANDOM_REWARD + 0.1
    assert scores["awr"] > RANDOM_REWARD + 0.1
    assert scores["awr"] > scores["bc"] + 0.1
