"""Every loss of dmc-align against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from dmc_align.credit import credit_weights
from dmc_align.divergence import gaussian_kl
from dmc_align.methods import (
    diffusion_dpo_loss,
    ppo_surrogate,
    q_policy_loss,
    standardise_per_condition,
    top_per_condition,
)
from dmc_align.rewards import nearest_neighbour_log
from dmc_align.spec import CreditSpec
from dmc_core.diffusion import StepRecord


def test_ppo_clip_takes_the_pessimistic_side_of_the_clipped_ratio() -> None:
    old = torch.zeros(4)
    # ratios 1.5, 1.5, 0.5, 1.1 with advantages 2, -1, -1, 3; clip 0.2.
    log_prob = torch.log(torch.tensor([1.5, 1.5, 0.5, 1.1]))
    advantages = torch.tensor([2.0, -1.0, -1.0, 3.0])
    loss = ppo_surrogate(log_prob, old, advantages, clip=0.2)
    # max(-A r, -A clip(r)): (-3, -2.4) -> -2.4; (1.5, 1.2) -> 1.5; (0.5, 0.8) -> 0.8;
    # (-3.3, -3.3) -> -3.3.
    assert torch.allclose(loss, torch.tensor([-2.4, 1.5, 0.8, -3.3]), atol=1e-6)
    unclipped = ppo_surrogate(log_prob, old, advantages, clip=None)
    assert torch.allclose(unclipped, torch.tensor([-3.0, 1.5, 0.5, -3.3]), atol=1e-6)


def test_ppo_gradient_vanishes_where_the_clip_binds() -> None:
    log_prob = torch.log(torch.tensor([1.5, 1.1])).requires_grad_(True)
    ppo_surrogate(log_prob, torch.zeros(2), torch.tensor([2.0, 2.0]), 0.2).sum().backward()
    assert log_prob.grad is not None
    assert log_prob.grad[0] == 0.0
    assert torch.isclose(log_prob.grad[1], torch.tensor(-2.0 * 1.1))


def test_gaussian_kl_per_step_matches_the_closed_form() -> None:
    # KL(N(1, 1) || N(0, 2^2)) = log 2 + (1 + 1) / 8 - 1/2 per dimension.
    one = math.log(2.0) + 2.0 / 8.0 - 0.5
    mean_p, mean_q = torch.ones(2, 3), torch.zeros(2, 3)
    kl = gaussian_kl(mean_p, 1.0, mean_q, 2.0)
    assert torch.allclose(kl, torch.full((2,), 3 * one), atol=1e-6)
    # Equal stds: ||mu_p - mu_q||^2 / (2 sigma^2); in-painted entries are left out.
    free = torch.tensor([[True, True, False], [True, False, False]])
    kl = gaussian_kl(
        torch.tensor([[0.2, 0.4, 9.0], [0.3, 9.0, 9.0]]), 0.1, torch.zeros(2, 3), 0.1, free
    )
    assert torch.allclose(kl, torch.tensor([(0.04 + 0.16) / 0.02, 0.09 / 0.02]), atol=1e-4)
    assert torch.allclose(gaussian_kl(mean_p, 0.5, mean_p, 0.5), torch.zeros(2))


def test_dpo_loss_is_log_two_when_the_model_is_the_reference() -> None:
    losses = torch.tensor([0.3, 1.2, 0.05])
    loss, inside = diffusion_dpo_loss(losses, losses.flip(0), losses, losses.flip(0), beta=50.0)
    assert torch.allclose(loss, torch.full((3,), math.log(2.0)))
    assert torch.equal(inside, torch.zeros(3))


def test_dpo_loss_matches_a_hand_computed_pair() -> None:
    # inside = -beta [(0.5 - 0.7) - (0.9 - 0.6)] = -2 (-0.5) = 1; loss = log(1 + e^-1).
    one = torch.tensor
    loss, inside = diffusion_dpo_loss(one([0.5]), one([0.9]), one([0.7]), one([0.6]), beta=2.0)
    assert torch.isclose(inside, one([1.0])).all()
    assert torch.isclose(loss, one([math.log(1.0 + math.exp(-1.0))])).all()
    weighted, _ = diffusion_dpo_loss(
        one([0.5]), one([0.9]), one([0.7]), one([0.6]), 2.0, one([3.0])
    )
    assert torch.isclose(weighted, one([math.log(1.0 + math.exp(-3.0))])).all()


def test_q_policy_loss_is_scale_free() -> None:
    reward = torch.tensor([1.0, 3.0], requires_grad=True)
    loss = q_policy_loss(reward)
    assert torch.isclose(loss, torch.tensor(-1.0))
    loss.backward()
    assert reward.grad is not None
    assert torch.allclose(reward.grad, torch.full((2,), -0.25))  # -1 / (n mean|r|)


def test_advantages_are_standardised_within_each_condition_with_a_floor() -> None:
    rewards = torch.tensor([1.0, 3.0, 5.0, 5.0, 5.0, 5.01])
    advantages = standardise_per_condition(rewards, 2, std_floor=0.1, clip=5.0)
    assert torch.allclose(advantages[:4], torch.tensor([-1.0, 1.0, 0.0, 0.0]))
    # Group 3's std is 0.005, floored to 0.1: +-0.05, not +-1.
    assert torch.allclose(advantages[4:], torch.tensor([-0.05, 0.05]), atol=1e-5)
    assert standardise_per_condition(torch.tensor([0.0, 100.0]), 2, 1.0, 0.5).abs().max() == 0.5


def test_top_per_condition_keeps_the_best_of_each_group() -> None:
    rewards = torch.tensor([0.1, 0.9, 0.5, 0.4, 0.3, 0.2, 0.8, 0.0])
    assert top_per_condition(rewards, 4, 0.25).tolist() == [1, 6]
    assert sorted(top_per_condition(rewards, 4, 0.5).tolist()) == [1, 2, 4, 6]


def test_nearest_neighbour_term_of_the_entropy_bonus() -> None:
    samples = torch.tensor([[0.0], [1.0], [3.0], [0.0], [0.5], [2.0]])
    values = nearest_neighbour_log(samples, groups=2)
    expected = torch.log(torch.tensor([1.0, 1.0, 2.0, 0.5, 0.5, 1.5]) + 1e-6)
    assert torch.allclose(values, expected)
    with pytest.raises(ValueError, match="two samples"):
        nearest_neighbour_log(samples, groups=6)


def _record(z_t: list[float], z_prev: list[float]) -> StepRecord:
    zt, zp = torch.tensor([z_t]), torch.tensor([z_prev])
    return StepRecord(1, zt, zp, zp, torch.tensor(0.1), torch.zeros(1))


def test_credit_weights_decreasing_and_direction() -> None:
    steps = [
        _record([2.0, 0.0], [1.0, 0.0]),
        _record([1.0, 0.0], [1.0, 1.0]),
        _record([1.0, 1.0], [0.0, 0.0]),
    ]
    uniform = credit_weights(CreditSpec("uniform"), steps, 2)
    assert torch.equal(uniform, torch.ones(2, 1))
    decreasing = credit_weights(CreditSpec("decreasing", decay=0.5), steps, 3)
    raw = torch.tensor([0.25, 0.5, 1.0])
    assert torch.allclose(decreasing[:, 0], raw / raw.mean())
    # Chain direction z_T - z_0 = (2, 0); step directions (1, 0), (0, -1), (1, 1):
    # cosines 1, 0, 1/sqrt(2), normalised to mean 1.
    direction = credit_weights(CreditSpec("direction"), steps, 3)[:, 0]
    cosines = torch.tensor([1.0, 0.0, 1.0 / math.sqrt(2.0)])
    assert torch.allclose(direction, cosines / cosines.mean(), atol=1e-6)
