"""DDPM: step records, gradient truncation, determinism, in-painting and the masked loss."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from dmc_core.diffusion import DDPM, NoiseSchedule, SampleResult, gaussian_log_prob, vp_betas
from dmc_core.seeding import torch_generator
from dmc_core.testing import assert_inpainted

T = 10


class MLPDenoiser(nn.Module):
    """An epsilon model over (z, t / T) that counts the calls it gets with grad enabled."""

    def __init__(self, dim: int, num_steps: int = T, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.num_steps = num_steps
        self.net = nn.Sequential(nn.Linear(dim + 1, 32), nn.Tanh(), nn.Linear(32, dim))
        self.grad_calls = 0
        self.calls = 0

    def forward(self, z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        self.calls += 1
        self.grad_calls += int(torch.is_grad_enabled())
        return self.net(torch.cat([z_t, (t.to(z_t.dtype) / self.num_steps)[:, None]], dim=1))


@pytest.fixture
def ddpm() -> DDPM:
    return DDPM(NoiseSchedule.from_betas(vp_betas(T)))


def normal_log_prob(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    return torch.distributions.Normal(mean, std).log_prob(x).reshape(x.shape[0], -1).sum(1)


def test_gaussian_log_prob_matches_torch_normal() -> None:
    x, mean = torch.randn(4, 2, 3), torch.randn(4, 2, 3)
    std = torch.rand(1, 2, 3) + 0.1
    assert torch.allclose(gaussian_log_prob(x, mean, std), normal_log_prob(x, mean, std))
    free = torch.rand(4, 2, 3) > 0.5
    full = torch.distributions.Normal(mean, std).log_prob(x)
    expected = (full * free).reshape(4, -1).sum(1)
    assert torch.allclose(gaussian_log_prob(x, mean, std, free=free), expected)


def test_records_are_the_ddpm_posterior_gaussians_with_exact_log_probs(ddpm: DDPM) -> None:
    model, floor = MLPDenoiser(3), 0.05
    result = ddpm.sample(model, (4, 3), None, torch_generator(0), std_floor=floor)
    sched = ddpm.schedule
    assert [s.t for s in result.steps] == list(range(T, 0, -1))
    for step in result.steps:
        i = step.t - 1
        beta, abar = float(sched.betas[i]), float(sched.alphas_cumprod[i])
        abar_prev = float(sched.alphas_cumprod[i - 1]) if step.t > 1 else 1.0
        # Ho et al. Eq. 11 form of the mean (the code uses the equivalent x0 form).
        eps = model(step.z_t, torch.full((4,), step.t), None)
        mean = (step.z_t - beta / math.sqrt(1 - abar) * eps) / math.sqrt(1 - beta)
        assert torch.allclose(step.mean, mean, atol=1e-5)
        small_std = math.sqrt(beta * (1 - abar_prev) / (1 - abar))
        assert float(step.std) == pytest.approx(max(small_std, floor), rel=1e-6)
        assert float(step.std) >= floor
        assert torch.allclose(step.log_prob, normal_log_prob(step.z_prev, step.mean, step.std))
    assert torch.equal(result.x0, result.steps[-1].z_prev)
    assert torch.allclose(result.log_prob, sum(s.log_prob for s in result.steps))
    assert result.log_prob.shape == (4,) and bool(torch.isfinite(result.log_prob).all())


def test_without_a_floor_the_last_step_is_deterministic(ddpm: DDPM) -> None:
    result = ddpm.sample(MLPDenoiser(2), (5, 2), None, torch_generator(1))
    last = result.steps[-1]
    assert float(last.std) == 0.0 and torch.equal(last.log_prob, torch.zeros(5))
    assert torch.equal(last.z_prev, last.mean)
    assert all(float(s.std) > 0 for s in result.steps[:-1])


def test_gradients_flow_through_the_last_k_steps_only(ddpm: DDPM) -> None:
    model = MLPDenoiser(2)
    result = ddpm.sample(model, (8, 2), None, torch_generator(2), grad_last_k=2, std_floor=0.01)
    assert model.calls == T and model.grad_calls == 2
    assert result.x0.requires_grad
    (result.x0**2).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)
    assert not any(s.z_prev.requires_grad for s in result.steps[:-2])
    assert all(s.z_prev.requires_grad for s in result.steps[-2:])
    assert not result.steps[-2].z_t.requires_grad  # the chain is cut at the K-th last input


def test_no_gradients_for_k_zero_and_all_steps_for_k_at_least_t(ddpm: DDPM) -> None:
    model = MLPDenoiser(2)
    result = ddpm.sample(model, (8, 2), None, torch_generator(3))
    assert model.grad_calls == 0 and not result.x0.requires_grad
    assert not result.log_prob.requires_grad
    model = MLPDenoiser(2)
    ddpm.sample(model, (8, 2), None, torch_generator(3), grad_last_k=T + 5)
    assert model.grad_calls == T


def test_the_same_seed_repeats_a_sample_and_another_seed_differs(ddpm: DDPM) -> None:
    model = MLPDenoiser(3)

    def draw(seed: int) -> SampleResult:
        return ddpm.sample(model, (6, 3), None, torch_generator(seed), std_floor=0.1)

    first, again, other = draw(7), draw(7), draw(8)
    assert torch.equal(first.x0, again.x0) and torch.equal(first.log_prob, again.log_prob)
    assert not torch.allclose(first.x0, other.x0)


def test_inpainted_entries_hold_their_values_and_carry_no_density(ddpm: DDPM) -> None:
    mask = torch.zeros(4, 3, dtype=torch.bool)
    mask[:, 0] = True
    mask[1, 2] = True
    values = torch.randn(4, 3)
    result = ddpm.sample(
        MLPDenoiser(3), (4, 3), None, torch_generator(4), inpaint=(mask, values), std_floor=0.02
    )
    assert_inpainted(result, mask, values)


def test_clip_x0_bounds_the_predicted_x0(ddpm: DDPM) -> None:
    def wild(z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        return torch.full_like(z_t, -50.0)  # a huge epsilon: x0_hat far outside [-1, 1]

    clipped = ddpm.sample(wild, (3, 2), None, torch_generator(5), clip_x0=1.0)
    free = ddpm.sample(wild, (3, 2), None, torch_generator(5))
    # At t = 1 the mean is x0_hat itself, so the clip shows directly in x0.
    assert float(clipped.x0.abs().max()) <= 1.0 + 1e-6
    assert float(free.x0.abs().max()) > 10.0


def test_record_false_returns_no_steps(ddpm: DDPM) -> None:
    result = ddpm.sample(MLPDenoiser(2), (3, 2), None, torch_generator(6), record=False)
    assert result.steps == () and result.x0.shape == (3, 2)
    with pytest.raises(ValueError, match="record"):
        _ = result.log_prob


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"grad_last_k": -1}, "grad_last_k"),
        ({"std_floor": -0.1}, "std_floor"),
        ({"clip_x0": 0.0}, "clip_x0"),
    ],
)
def test_sample_rejects_bad_options(ddpm: DDPM, kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ddpm.sample(MLPDenoiser(2), (3, 2), None, torch_generator(0), **kwargs)


def test_q_sample_is_the_forward_marginal(ddpm: DDPM) -> None:
    x0, noise = torch.randn(3, 2), torch.randn(3, 2)
    t = torch.tensor([1, 5, T])
    abar = ddpm.schedule.alphas_cumprod[t - 1].float()[:, None]
    assert torch.allclose(ddpm.q_sample(x0, t, noise), abar.sqrt() * x0 + (1 - abar).sqrt() * noise)
    with pytest.raises(ValueError, match="t must"):
        ddpm.q_sample(x0, torch.tensor([0, 1, 2]), noise)


class Recorder:
    """A zero epsilon model that keeps its inputs, so a test can recover the drawn noise."""

    def __init__(self, offset: Tensor | None = None) -> None:
        self.offset = offset
        self.inputs: list[tuple[Tensor, Tensor]] = []

    def __call__(self, z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        self.inputs.append((z_t, t))
        return torch.zeros_like(z_t) if self.offset is None else self.offset.expand_as(z_t)


def test_loss_is_the_masked_weighted_epsilon_mse_per_sample(ddpm: DDPM) -> None:
    x0 = torch.randn(64, 4)
    mask = torch.zeros(64, 4, dtype=torch.bool)
    mask[:, :2] = True
    mask[0] = True  # a sample with nothing to predict
    weights = torch.tensor([1.0, 1.0, 2.0, 0.5])
    recorder = Recorder()
    loss = ddpm.loss(recorder, x0, None, torch_generator(0), mask=mask, weights=weights)
    assert loss.shape == (64,)
    z_t, t = recorder.inputs[0]
    assert int(t.min()) >= 1 and int(t.max()) <= T and len(set(t.tolist())) > 1
    assert torch.equal(z_t[mask], x0[mask])  # known entries enter as the sampler in-paints them
    abar = ddpm.schedule.alphas_cumprod[t - 1].float()[:, None]
    noise = (z_t - abar.sqrt() * x0) / (1 - abar).sqrt()
    free = (~mask).float()
    expected = (weights * noise**2 * free).sum(1) / free.sum(1).clamp(min=1)
    assert torch.allclose(loss, expected, atol=1e-5) and float(loss[0]) == 0.0


def test_loss_ignores_the_output_at_masked_entries(ddpm: DDPM) -> None:
    x0 = torch.randn(16, 3)
    mask = torch.zeros(16, 3, dtype=torch.bool)
    mask[:, 0] = True
    shifted = Recorder(offset=torch.tensor([100.0, 0.0, 0.0]))
    base = ddpm.loss(Recorder(), x0, None, torch_generator(9), mask=mask)
    assert torch.equal(base, ddpm.loss(shifted, x0, None, torch_generator(9), mask=mask))
    unmasked = ddpm.loss(Recorder(), x0, None, torch_generator(9))
    assert not torch.allclose(unmasked, ddpm.loss(shifted, x0, None, torch_generator(9)))
    assert unmasked.shape == (16,)


def test_loss_uses_the_given_t_and_noise(ddpm: DDPM) -> None:
    x0, noise = torch.randn(5, 2), torch.randn(5, 2)
    t = torch.tensor([1, 3, 5, 7, T])
    recorder = Recorder()
    loss = ddpm.loss(recorder, x0, None, t=t, noise=noise)
    z_t, seen = recorder.inputs[0]
    assert seen.dtype == torch.long and torch.equal(seen, t)
    assert torch.equal(z_t, ddpm.q_sample(x0, t, noise))
    assert torch.allclose(loss, (noise**2).mean(1))
    with pytest.raises(ValueError, match="t must have shape"):
        ddpm.loss(recorder, x0, None, t=t[:4])
    with pytest.raises(ValueError, match="noise must"):
        ddpm.loss(recorder, x0, None, noise=noise[:, :1])
    with pytest.raises(ValueError, match="integer"):
        ddpm.loss(recorder, x0, None, t=t.float())
