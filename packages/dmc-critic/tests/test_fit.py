"""The in-memory training loop: it learns, moves the targets, and repeats with its seeds."""

from __future__ import annotations

import copy

import numpy as np
import torch

from dmc_core.data import TransitionDataset
from dmc_core.seeding import torch_generator
from dmc_critic import CriticSpec, CriticTrainSpec, TransitionSampler, build_critic, fit_iql


def _fit(
    dataset: TransitionDataset, steps: int, seed: int = 0
) -> tuple[list[float], torch.nn.Module, torch.nn.Module]:
    spec = CriticSpec(
        hidden=16, fourier_frequencies=0, train=CriticTrainSpec(batch_size=32, lr=3e-3)
    )
    torch.manual_seed(seed)
    critic = build_critic(spec, dataset)
    start = copy.deepcopy(critic)
    losses = fit_iql(
        critic, TransitionSampler(dataset, spec), spec.train, torch_generator(0), steps
    )
    return losses, critic, start


def test_fit_learns_a_bandit_and_moves_the_targets(
    bandit: TransitionDataset, one_thread: None
) -> None:
    losses, critic, start = _fit(bandit, 300)
    assert len(losses) == 300
    assert np.mean(losses[-20:]) < 0.2 * np.mean(losses[:20])
    for moved, initial in zip(
        critic.q_targets.parameters(), start.q_targets.parameters(), strict=True
    ):
        assert not torch.equal(moved, initial)
    # Q(s, a) ~ a, so Q ranks actions correctly at a fixed state.
    act = torch.linspace(-0.9, 0.9, 7).unsqueeze(1)
    with torch.no_grad():
        q = critic.q(torch.zeros(7, 1), act)
    assert bool((q.diff() > 0).all()), q


def test_fit_repeats_with_its_seeds_and_zero_steps_changes_nothing(
    bandit: TransitionDataset, one_thread: None
) -> None:
    first, _, _ = _fit(bandit, 20)
    second, _, _ = _fit(bandit, 20)
    assert first == second
    none, untouched, start = _fit(bandit, 0)
    assert none == []
    for a, b in zip(untouched.state_dict().values(), start.state_dict().values(), strict=True):
        assert torch.equal(a, b)
