"""DDIM: timesteps and validation, record semantics, agreement with DDPM, and training."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from dmc_core.diffusion import (
    DDIM,
    DDPM,
    NoiseSchedule,
    ddim_timesteps,
    make_betas,
    vp_betas,
)
from dmc_core.seeding import torch_generator


def linear_model(weight: float) -> Any:
    """A differentiable epsilon model eps = w * z, counting calls with grad enabled."""
    w = torch.tensor(weight, requires_grad=True)
    calls: list[bool] = []

    def denoiser(z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        calls.append(torch.is_grad_enabled())
        return w * z_t

    denoiser.w = w  # type: ignore[attr-defined]
    denoiser.calls = calls  # type: ignore[attr-defined]
    return denoiser


def test_timesteps_are_an_even_subsequence_from_t_down() -> None:
    assert ddim_timesteps(20, 20) == list(range(20, 0, -1))
    assert ddim_timesteps(10, 4) == [10, 7, 4, 1]
    assert ddim_timesteps(10, 1) == [10]
    assert DDIM(NoiseSchedule.from_betas(vp_betas(9)), 3).timesteps == [9, 5, 1]


@pytest.mark.parametrize(
    ("steps", "eta", "name"),
    [(0, 0.0, "steps"), (11, 0.0, "steps"), (5, -0.1, "eta"), (5, 1.5, "eta")],
)
def test_constructor_rejects_steps_and_eta_out_of_range(steps: int, eta: float, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        DDIM(NoiseSchedule.from_betas(vp_betas(10)), steps, eta)


def test_eta_zero_steps_are_deterministic_unless_floored() -> None:
    ddim = DDIM(NoiseSchedule.from_betas(vp_betas(10)), 5)
    model = linear_model(0.3)
    plain = ddim.sample(model, (4, 2), None, torch_generator(0))
    assert [s.t for s in plain.steps] == [10, 8, 6, 3, 1]
    for step in plain.steps:
        assert float(step.std) == 0.0 and torch.equal(step.log_prob, torch.zeros(4))
        assert torch.equal(step.z_prev, step.mean)
    # Given z_T the chain is a function: the same seed repeats it exactly.
    again = ddim.sample(model, (4, 2), None, torch_generator(0))
    assert torch.equal(plain.x0, again.x0)
    floored = ddim.sample(model, (4, 2), None, torch_generator(0), std_floor=0.1)
    for step in floored.steps:
        assert float(step.std) == pytest.approx(0.1)
        expected = torch.distributions.Normal(step.mean, step.std).log_prob(step.z_prev).sum(1)
        assert torch.allclose(step.log_prob, expected)
    assert torch.allclose(floored.log_prob, sum(s.log_prob for s in floored.steps))


def test_eta_zero_step_is_the_ddim_update_by_hand() -> None:
    sched = NoiseSchedule.from_betas(vp_betas(10))
    ddim = DDIM(sched, 5)
    step = ddim.sample(linear_model(0.3), (4, 2), None, torch_generator(1)).steps[0]
    a, a_prev = float(sched.alphas_cumprod[9]), float(sched.alphas_cumprod[7])
    eps = 0.3 * step.z_t
    x0 = (step.z_t - math.sqrt(1 - a) * eps) / math.sqrt(a)
    assert torch.allclose(step.mean, math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps)


def test_gradient_truncation_and_inpainting_use_the_shared_loop() -> None:
    ddim = DDIM(NoiseSchedule.from_betas(vp_betas(10)), 5, eta=0.5)
    model = linear_model(0.2)
    mask = torch.tensor([[True, False, False]]).expand(6, 3)
    values = torch.full((6, 3), 0.25)
    result = ddim.sample(
        model, (6, 3), None, torch_generator(2), grad_last_k=2, inpaint=(mask, values)
    )
    assert model.calls == [False, False, False, True, True]
    result.x0.sum().backward()
    assert model.w.grad is not None and float(model.w.grad) != 0.0
    assert not any(s.z_prev.requires_grad for s in result.steps[:3])
    assert torch.equal(result.x0[mask], values[mask])
    assert all(torch.equal(s.z_prev[mask], values[mask]) for s in result.steps)
    assert float(result.steps[0].std) > 0.0  # eta > 0 adds noise before the last step


def test_loss_is_ddpms() -> None:
    sched = NoiseSchedule.from_betas(vp_betas(10))
    x0 = torch.randn(8, 2)
    model = linear_model(0.5)
    ours = DDIM(sched, 3).loss(model, x0, None, torch_generator(3))
    assert torch.equal(ours, DDPM(sched).loss(model, x0, None, torch_generator(3)))


# Analytic target: x0 ~ N(M, S^2). The small-variance DDPM sampler under-disperses by O(1/T) even
# with the exact epsilon model (it drops Var[x0 | z_t]); T = 500 keeps that bias near 1%, below
# the sampling tolerance of 20000 draws.
M, S, T_EXACT, N = 0.5, 0.5, 500, 20000


def exact_model(sched: NoiseSchedule) -> Any:
    abar = sched.alphas_cumprod.float()

    def denoiser(z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        a = abar[t - 1][:, None]
        return (1 - a).sqrt() * (z_t - a.sqrt() * M) / (a * S**2 + 1 - a)

    return denoiser


def assert_moments(x: Tensor, mean: float, var: float, widen: float = 1.0) -> None:
    n = x.shape[0]
    assert abs(float(x.mean()) - mean) < widen * 4 * math.sqrt(var / n)
    assert abs(float(x.var()) - var) < widen * 4 * var * math.sqrt(2 / (n - 1))


def test_ddim_eta_one_with_all_steps_is_ddpm_ancestral_sampling(one_thread: None) -> None:
    sched = NoiseSchedule.from_betas(make_betas("cosine", T_EXACT))
    model, ddim = exact_model(sched), DDIM(sched, T_EXACT, eta=1.0)
    ddpm_x = DDPM(sched).sample(model, (N, 1), None, torch_generator(10), record=False).x0
    ddim_x = ddim.sample(model, (N, 1), None, torch_generator(11), record=False).x0
    assert_moments(ddpm_x, M, S**2)
    assert_moments(ddim_x, M, S**2)
    # Two independent samples: their mean difference has twice the variance of one mean.
    assert abs(float(ddpm_x.mean() - ddim_x.mean())) < 4 * math.sqrt(2 * S**2 / N)
    assert abs(float(ddpm_x.var() - ddim_x.var())) < 4 * S**2 * math.sqrt(4 / N)
    # With the same noise they are the same chain, step for step (Song et al. 2021, Sec. 4.1).
    small = DDPM(sched).sample(model, (64, 1), None, torch_generator(12), std_floor=0.0)
    same = ddim.sample(model, (64, 1), None, torch_generator(12))
    assert torch.allclose(small.x0, same.x0, atol=1e-4)
    assert torch.allclose(small.log_prob, same.log_prob, rtol=1e-4, atol=1e-2)


def test_ddim_eta_zero_solves_the_probability_flow_to_the_target(one_thread: None) -> None:
    sched = NoiseSchedule.from_betas(make_betas("cosine", T_EXACT))
    x = (
        DDIM(sched, T_EXACT)
        .sample(exact_model(sched), (N, 1), None, torch_generator(13), record=False)
        .x0
    )
    assert_moments(x, M, S**2, widen=1.5)


class MixtureDenoiser(nn.Module):
    """An MLP epsilon model over z and a few Fourier features of t / T."""

    def __init__(self, num_steps: int) -> None:
        super().__init__()
        self.num_steps = num_steps
        self.net = nn.Sequential(
            nn.Linear(5, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 1)
        )

    def forward(self, z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        tau = (t.to(z_t.dtype) / self.num_steps)[:, None]
        waves = [torch.sin(math.pi * tau), torch.cos(math.pi * tau), torch.sin(2 * math.pi * tau)]
        return self.net(torch.cat([z_t, tau, *waves], dim=1))


def test_trained_model_samples_both_modes_in_proportion(one_thread: None) -> None:
    T, iters = 20, 3000
    torch.manual_seed(0)
    gen = torch_generator(0)
    sched = NoiseSchedule.from_betas(vp_betas(T))
    ddpm, model = DDPM(sched), MixtureDenoiser(T)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    lr_decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    for _ in range(iters):
        upper = torch.rand(256, 1, generator=gen) < 0.7
        x0 = torch.where(upper, 0.6, -0.7) + 0.05 * torch.randn(256, 1, generator=gen)
        loss = ddpm.loss(model, x0, None, gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        lr_decay.step()
    for sampler in (ddpm, DDIM(sched, 10)):
        x = sampler.sample(model, (4000, 1), None, torch_generator(1), record=False).x0
        assert abs(float((x > 0).float().mean()) - 0.7) < 0.08
        assert 0.45 < float(x[x > 0].mean()) < 0.75 and -0.85 < float(x[x < 0].mean()) < -0.5
