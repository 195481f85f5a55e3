"""FM (flow matching): the Euler sampler by hand, floored records, hooks and the velocity loss."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from dmc_core.diffusion import FM
from dmc_core.seeding import torch_generator
from dmc_core.testing import LinearDenoiser, RecordingDenoiser, assert_inpainted

STEPS = 5


def normal_log_prob(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    return torch.distributions.Normal(mean, std).log_prob(x).reshape(x.shape[0], -1).sum(1)


def test_rejects_no_steps() -> None:
    with pytest.raises(ValueError, match="sample_steps"):
        FM(0)


def test_steps_are_deterministic_euler_landing_on_the_x0_prediction() -> None:
    fm, model = FM(STEPS), LinearDenoiser(0.7)
    result = fm.sample(model, (4, 2), None, torch_generator(0))
    assert [s.t for s in result.steps] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])
    assert fm.num_steps == STEPS == len(result.steps)
    for step, seen in zip(result.steps, model.times, strict=True):
        assert seen.dtype == torch.float32 and torch.allclose(seen, torch.full((4,), 1000 * step.t))
        assert torch.allclose(step.mean, step.z_t - 0.2 * 0.7 * step.z_t)
        assert float(step.std) == 0.0 and torch.equal(step.log_prob, torch.zeros(4))
        assert torch.equal(step.z_prev, step.mean)
    last = result.steps[-1]
    assert torch.allclose(result.x0, last.z_t - 0.2 * (0.7 * last.z_t))  # x0_hat = z_t - t v
    again = fm.sample(model, (4, 2), None, torch_generator(0))
    assert torch.equal(result.x0, again.x0)


def test_floored_steps_are_gaussian_with_exact_log_probs() -> None:
    fm = FM(STEPS)
    result = fm.sample(LinearDenoiser(0.7), (4, 3), None, torch_generator(1), std_floor=0.1)
    for step in result.steps:
        assert float(step.std) == pytest.approx(0.1)
        assert torch.allclose(step.mean, step.z_t - 0.2 * 0.7 * step.z_t)
        assert not torch.equal(step.z_prev, step.mean)
        assert torch.allclose(step.log_prob, normal_log_prob(step.z_prev, step.mean, step.std))
    assert torch.allclose(result.log_prob, sum(s.log_prob for s in result.steps))


def test_gradients_flow_through_the_last_k_steps_only() -> None:
    fm, model, k = FM(STEPS), LinearDenoiser(0.5), 2
    result = fm.sample(model, (6, 2), None, torch_generator(2), grad_last_k=k, std_floor=0.05)
    assert model.grad_modes == [False] * (STEPS - k) + [True] * k
    assert not any(s.z_prev.requires_grad for s in result.steps[:-k])
    assert not result.steps[-k].z_t.requires_grad
    (grad,) = torch.autograd.grad(result.x0.sum(), model.w)
    # Replay the last K steps by hand from the cut with the noise each drew (see the SM test).
    w = torch.tensor(0.5, requires_grad=True)
    z = result.steps[-k].z_t
    for step in result.steps[-k:]:
        noise = ((step.z_prev - step.mean) / step.std).detach()
        z = z - 0.2 * w * z + 0.05 * noise
    assert torch.allclose(z, result.x0, atol=1e-6)
    (replayed,) = torch.autograd.grad(z.sum(), w)
    assert float(grad) != 0.0 and float(grad) == pytest.approx(float(replayed), rel=1e-5)
    full = fm.sample(model, (6, 2), None, torch_generator(2), grad_last_k=STEPS, std_floor=0.05)
    (full_grad,) = torch.autograd.grad(full.x0.sum(), model.w)
    assert abs(float(full_grad) - float(grad)) > 1e-3 * abs(float(grad))


def test_the_same_seed_repeats_a_floored_sample_and_another_seed_differs() -> None:
    fm, model = FM(STEPS), LinearDenoiser(0.3)
    first = fm.sample(model, (4, 3), None, torch_generator(7), std_floor=0.1)
    again = fm.sample(model, (4, 3), None, torch_generator(7), std_floor=0.1)
    other = fm.sample(model, (4, 3), None, torch_generator(8), std_floor=0.1)
    assert torch.equal(first.x0, again.x0) and torch.equal(first.log_prob, again.log_prob)
    assert not torch.allclose(first.x0, other.x0)


def test_inpainted_entries_hold_their_values_and_carry_no_density() -> None:
    mask = torch.zeros(4, 3, dtype=torch.bool)
    mask[:, 2] = True
    mask[0, 0] = True
    values = torch.randn(4, 3, generator=torch_generator(0))
    result = FM(STEPS).sample(
        LinearDenoiser(0.3), (4, 3), None, torch_generator(4), inpaint=(mask, values), std_floor=0.1
    )
    assert_inpainted(result, mask, values)


def test_clip_x0_bounds_the_x0_prediction() -> None:
    def wild(z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        return torch.full_like(z_t, -50.0)  # x0_hat = z_t + 50 t, far outside [-1, 1]

    fm = FM(STEPS)
    assert float(fm.sample(wild, (3, 2), None, torch_generator(5)).x0.abs().max()) > 10.0
    clipped = fm.sample(wild, (3, 2), None, torch_generator(5), clip_x0=1.0)
    assert float(clipped.x0.abs().max()) <= 1.0 + 1e-6
    # Each clipped step moves along the straight line from z_t to the clamped x0_hat.
    step = clipped.steps[1]
    x0 = (step.z_t - step.t * -50.0).clamp(-1.0, 1.0)
    assert torch.allclose(step.mean, 0.6 / 0.8 * step.z_t + (1 - 0.6 / 0.8) * x0)


def test_loss_is_the_masked_weighted_velocity_mse_at_the_given_t_and_noise() -> None:
    fm = FM(STEPS)
    x0, noise = torch.randn(32, 3), torch.randn(32, 3)
    t = fm.draw_times(32, torch_generator(0), "cpu")
    assert t.dtype == torch.float32 and float(t.min()) >= 0.0 and float(t.max()) < 1.0
    mask = torch.zeros(32, 3, dtype=torch.bool)
    mask[:, 1] = True
    weights = torch.tensor([2.0, 1.0, 0.5])
    recorder = RecordingDenoiser()
    loss = fm.loss(recorder, x0, None, mask=mask, weights=weights, t=t, noise=noise)
    z_t, seen = recorder.inputs[0]
    assert torch.allclose(seen, 1000 * t) and seen.dtype == torch.float32
    path = (1 - t[:, None]) * x0 + t[:, None] * noise
    assert torch.allclose(z_t[~mask], path[~mask]) and torch.equal(z_t[mask], x0[mask])
    expected = (weights * (noise - x0) ** 2 * ~mask).sum(1) / 2
    assert torch.allclose(loss, expected)
    snr = fm.snr(torch.tensor([0.1, 0.5, 0.9]))
    assert torch.allclose(snr, torch.tensor([81.0, 1.0, 1 / 81]))
    with pytest.raises(ValueError, match="float"):
        fm.loss(recorder, x0, None, t=torch.ones(32, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fm.loss(recorder, x0, None, t=torch.full((32,), 1.5))
    with pytest.raises(ValueError, match="t must have shape"):
        fm.loss(recorder, x0, None, t=torch.rand(31))


# Analytic target x0 ~ N(M, S^2): v*(z, t) = (z - E[x0 | z_t = z]) / t on the straight path.
M, S, N = 0.5, 0.5, 20000


def test_exact_velocity_samples_the_gaussian_target(one_thread: None) -> None:
    def exact(z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        t = (t / 1000)[:, None]
        gain = (1 - t) * S**2 / ((1 - t) ** 2 * S**2 + t**2)
        return (z_t - (M + gain * (z_t - (1 - t) * M))) / t

    x = FM(200).sample(exact, (N, 1), None, torch_generator(21), record=False).x0
    assert abs(float(x.mean()) - M) < 4 * math.sqrt(S**2 / N)
    assert abs(float(x.var()) - S**2) < 4 * S**2 * math.sqrt(2 / (N - 1))
