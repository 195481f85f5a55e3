"""SM (VP-SDE score model): marginals, the two samplers by hand, records, hooks and the loss."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from dmc_core.diffusion import SM
from dmc_core.seeding import torch_generator
from dmc_core.testing import LinearDenoiser, RecordingDenoiser, assert_inpainted

STEPS = 8


def coefficients(sm: SM, t: float) -> tuple[float, float, float]:
    """alpha(t), sigma(t) and beta(t) of the VP-SDE, from the closed form by hand."""
    log_alpha = -0.25 * t**2 * (sm.beta_max - sm.beta_min) - 0.5 * t * sm.beta_min
    alpha = math.exp(log_alpha)
    return alpha, math.sqrt(1 - alpha**2), sm.beta_min + t * (sm.beta_max - sm.beta_min)


def normal_log_prob(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    return torch.distributions.Normal(mean, std).log_prob(x).reshape(x.shape[0], -1).sum(1)


def test_marginal_is_the_integrated_vp_sde_and_snr_decreases() -> None:
    sm = SM(10, beta_min=0.1, beta_max=20.0)
    t = torch.tensor([1e-3, 0.1, 0.5, 1.0], dtype=torch.float64)
    alpha, sigma = sm.marginal(t)
    # alpha(t) = exp(-1/2 * integral of beta), by the trapezoid rule on a fine grid.
    for i, ti in enumerate(t.tolist()):
        s = torch.linspace(0, ti, 20001, dtype=torch.float64)
        integral = float(torch.trapezoid(0.1 + s * 19.9, s))
        assert float(alpha[i]) == pytest.approx(math.exp(-0.5 * integral), rel=1e-7)
    assert torch.allclose(alpha**2 + sigma**2, torch.ones(4, dtype=torch.float64))
    snr = sm.snr(t)
    assert snr.dtype == torch.float32 and bool((snr[1:] < snr[:-1]).all())
    assert torch.allclose(snr.double(), alpha**2 / sigma**2, rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"sample_steps": 0}, "sample_steps"),
        ({"sampler": "heun"}, "heun"),
        ({"t_eps": 0.0}, "t_eps"),
        ({"t_eps": 1.0}, "t_eps"),
        ({"beta_min": 5.0, "beta_max": 1.0}, "beta"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs: dict[str, Any], name: str) -> None:
    args: dict[str, Any] = {"sample_steps": 4, **kwargs}
    with pytest.raises(ValueError, match=name):
        SM(**args)


def test_sde_steps_are_euler_maruyama_and_the_last_is_tweedie() -> None:
    sm, model = SM(STEPS, "sde", t_eps=0.01), LinearDenoiser(0.4)
    result = sm.sample(model, (5, 2), None, torch_generator(0))
    grid = torch.linspace(1.0, 0.01, STEPS, dtype=torch.float64).tolist()
    assert [s.t for s in result.steps] == pytest.approx(grid)
    assert sm.num_steps == STEPS == len(result.steps)
    for k, step in enumerate(result.steps):
        alpha, sigma, beta = coefficients(sm, grid[k])
        eps = 0.4 * step.z_t
        if k == STEPS - 1:
            assert torch.allclose(step.mean, (step.z_t - sigma * eps) / alpha, atol=1e-5)
            assert float(step.std) == 0.0 and torch.equal(step.log_prob, torch.zeros(5))
            assert torch.equal(step.z_prev, step.mean)
            continue
        h = grid[k] - grid[k + 1]
        score = -eps / sigma
        expected = step.z_t + h * (0.5 * beta * step.z_t + beta * score)
        assert torch.allclose(step.mean, expected, atol=1e-5)
        assert float(step.std) == pytest.approx(math.sqrt(beta * h), rel=1e-6)
        assert torch.allclose(step.log_prob, normal_log_prob(step.z_prev, step.mean, step.std))
    assert torch.equal(result.x0, result.steps[-1].z_prev)
    assert torch.allclose(result.log_prob, sum(s.log_prob for s in result.steps))


def test_ode_steps_are_the_probability_flow_euler_and_deterministic() -> None:
    sm, model = SM(STEPS, "ode"), LinearDenoiser(0.4)
    result = sm.sample(model, (5, 2), None, torch_generator(1))
    for k, step in enumerate(result.steps[:-1]):
        t, t_next = sm.timesteps[k], sm.timesteps[k + 1]
        _, sigma, beta = coefficients(sm, t)
        drift = -0.5 * beta * step.z_t - 0.5 * beta * (-0.4 * step.z_t / sigma)
        assert torch.allclose(step.mean, step.z_t - (t - t_next) * drift, atol=1e-5)
    for step in result.steps:
        assert float(step.std) == 0.0 and torch.equal(step.log_prob, torch.zeros(5))
        assert torch.equal(step.z_prev, step.mean)
    floored = sm.sample(model, (5, 2), None, torch_generator(1), std_floor=0.05)
    for step in floored.steps:
        assert float(step.std) == pytest.approx(0.05)
        assert torch.allclose(step.log_prob, normal_log_prob(step.z_prev, step.mean, step.std))


def test_the_denoiser_sees_1000_t_as_float32() -> None:
    sm, model = SM(STEPS, "sde"), LinearDenoiser(0.1)
    sm.sample(model, (3, 1), None, torch_generator(2))
    for t, seen in zip(sm.timesteps, model.times, strict=True):
        assert seen.dtype == torch.float32 and seen.shape == (3,)
        assert torch.allclose(seen, torch.full((3,), 1000 * t))


def test_gradients_flow_through_the_last_k_steps_only() -> None:
    sm, model, k = SM(STEPS, "sde"), LinearDenoiser(0.3), 3
    result = sm.sample(model, (6, 2), None, torch_generator(3), grad_last_k=k)
    assert model.grad_modes == [False] * (STEPS - k) + [True] * k
    assert not any(s.z_prev.requires_grad for s in result.steps[:-k])
    assert not result.steps[-k].z_t.requires_grad  # the chain is cut at the K-th last input
    (grad,) = torch.autograd.grad(result.x0.sum(), model.w)
    # Replay the last K steps by hand from the cut, with the noise each step drew: the same
    # gradient means nothing reached w through the K earlier (detached) steps.
    w = torch.tensor(0.3, requires_grad=True)
    z = result.steps[-k].z_t
    for offset, step in enumerate(result.steps[-k:]):
        index = STEPS - k + offset
        alpha, sigma, beta = coefficients(sm, sm.timesteps[index])
        if index == STEPS - 1:
            z = (z - sigma * w * z) / alpha
            continue
        noise = ((step.z_prev - step.mean) / step.std).detach()
        h = sm.timesteps[index] - sm.timesteps[index + 1]
        z = z + h * beta * (0.5 * z - w * z / sigma) + math.sqrt(beta * h) * noise
    assert torch.allclose(z, result.x0, atol=1e-5)
    (replayed,) = torch.autograd.grad(z.sum(), w)
    assert float(grad) != 0.0 and float(grad) == pytest.approx(float(replayed), rel=1e-4)
    # All steps differentiable: a different gradient, so the check above can tell them apart.
    full = sm.sample(model, (6, 2), None, torch_generator(3), grad_last_k=STEPS)
    (full_grad,) = torch.autograd.grad(full.x0.sum(), model.w)
    assert abs(float(full_grad) - float(grad)) > 1e-3 * abs(float(grad))


def test_the_same_seed_repeats_a_sample_and_another_seed_differs() -> None:
    sm, model = SM(STEPS, "sde"), LinearDenoiser(0.2)
    first = sm.sample(model, (4, 3), None, torch_generator(7))
    again = sm.sample(model, (4, 3), None, torch_generator(7))
    other = sm.sample(model, (4, 3), None, torch_generator(8))
    assert torch.equal(first.x0, again.x0) and torch.equal(first.log_prob, again.log_prob)
    assert not torch.allclose(first.x0, other.x0)


def test_inpainted_entries_hold_their_values_and_carry_no_density() -> None:
    sm = SM(STEPS, "sde")
    mask = torch.zeros(4, 3, dtype=torch.bool)
    mask[:, 0] = True
    mask[2, 1] = True
    values = torch.randn(4, 3, generator=torch_generator(0))
    model = LinearDenoiser(0.2)
    result = sm.sample(model, (4, 3), None, torch_generator(4), inpaint=(mask, values))
    assert_inpainted(result, mask, values, densities=slice(None, -1))
    assert torch.equal(result.steps[-1].log_prob, torch.zeros(4))  # the Tweedie landing


def test_clip_x0_bounds_the_tweedie_landing() -> None:
    def wild(z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        return torch.full_like(z_t, -50.0)  # a huge eps: x0_hat far outside [-1, 1]

    sm = SM(STEPS, "ode")
    assert float(sm.sample(wild, (3, 2), None, torch_generator(5)).x0.abs().max()) > 10.0
    clipped = sm.sample(wild, (3, 2), None, torch_generator(5), clip_x0=1.0)
    assert float(clipped.x0.abs().max()) <= 1.0 + 1e-6


def test_loss_is_the_masked_weighted_eps_mse_at_the_given_t_and_noise() -> None:
    sm = SM(STEPS)
    x0, noise = torch.randn(32, 3), torch.randn(32, 3)
    t = sm.draw_times(32, torch_generator(0), "cpu")
    assert t.dtype == torch.float32 and float(t.min()) >= sm.t_eps and float(t.max()) <= 1.0
    mask = torch.zeros(32, 3, dtype=torch.bool)
    mask[:, 0] = True
    weights = torch.tensor([1.0, 2.0, 0.5])
    recorder = RecordingDenoiser()
    loss = sm.loss(recorder, x0, None, mask=mask, weights=weights, t=t, noise=noise)
    z_t, seen = recorder.inputs[0]
    assert torch.allclose(seen, 1000 * t) and seen.dtype == torch.float32
    alpha, sigma = (c.float()[:, None] for c in sm.marginal(t))
    assert torch.allclose(z_t[~mask], (alpha * x0 + sigma * noise)[~mask])
    assert torch.equal(z_t[mask], x0[mask])
    expected = (weights * noise**2 * ~mask).sum(1) / 2
    assert torch.allclose(loss, expected)
    with pytest.raises(ValueError, match="float"):
        sm.loss(recorder, x0, None, t=torch.ones(32, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        sm.loss(recorder, x0, None, t=torch.zeros(32))
    with pytest.raises(ValueError, match="noise"):
        sm.loss(recorder, x0, None, noise=torch.zeros(32, 2))


# Analytic target x0 ~ N(M, S^2): eps*(z, t) = sigma (z - alpha M) / (alpha^2 S^2 + sigma^2).
M, S, N = 0.5, 0.5, 20000


@pytest.mark.parametrize("sampler", ["sde", "ode"])
def test_exact_score_samples_the_gaussian_target(sampler: str, one_thread: None) -> None:
    sm = SM(200, sampler)

    def exact(z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        alpha, sigma = (c.float()[:, None] for c in sm.marginal(t / 1000))
        return sigma * (z_t - alpha * M) / (alpha**2 * S**2 + sigma**2)

    x = sm.sample(exact, (N, 1), None, torch_generator(20), record=False).x0
    assert abs(float(x.mean()) - M) < 4 * math.sqrt(S**2 / N)
    assert abs(float(x.var()) - S**2) < 4 * S**2 * math.sqrt(2 / (N - 1))
