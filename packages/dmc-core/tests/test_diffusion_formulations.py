"""Every formulation through one interface: factory, time units, shared t/noise, SNR, training."""

from __future__ import annotations

import functools
import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from dmc_core.diffusion import (
    DDIM,
    DDPM,
    FM,
    SM,
    Formulation,
    build_formulation,
)
from dmc_core.seeding import torch_generator

NAMES = ["ddpm", "ddim", "sm", "fm"]


class Recorder:
    """A model returning 0.1 * z that keeps the time inputs it gets."""

    def __init__(self) -> None:
        self.times: list[Tensor] = []

    def __call__(self, z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        self.times.append(t)
        return 0.1 * z_t


def test_factory_builds_each_formulation_with_its_settings() -> None:
    ddpm = build_formulation("ddpm", num_steps=30, schedule="cosine")
    assert isinstance(ddpm, DDPM) and ddpm.num_steps == 30 and ddpm.name == "ddpm"
    ddim = build_formulation("ddim", num_steps=30, sample_steps=10, eta=0.5)
    assert isinstance(ddim, DDIM) and ddim.num_steps == 10 and ddim.eta == 0.5
    assert ddim.schedule.num_steps == 30 and ddim.name == "ddim"
    assert build_formulation("ddim", num_steps=30).num_steps == 30
    sm = build_formulation("sm", num_steps=30, sampler="ode")
    assert isinstance(sm, SM) and sm.sampler == "ode" and sm.num_steps == 30 and sm.name == "sm"
    fm = build_formulation("fm", num_steps=30, sample_steps=7)
    assert isinstance(fm, FM) and fm.num_steps == 7 and fm.name == "fm"
    for formulation in (ddpm, ddim, sm, fm):
        assert isinstance(formulation, Formulation)


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"name": "edm"}, "'edm'"),
        ({"name": "sm", "sampler": "heun"}, "'heun'"),
        ({"name": "ddpm", "sampler": "heun"}, "'heun'"),
        ({"name": "ddpm", "schedule": "sigmoid"}, "'sigmoid'"),
    ],
)
def test_factory_errors_name_the_bad_value_and_the_known_ones(
    kwargs: dict[str, Any], bad: str
) -> None:
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=bad) as error:
        build_formulation(name, num_steps=10, **kwargs)
    assert "known" in str(error.value)
    if name == "edm":
        assert all(known in str(error.value) for known in NAMES)


@pytest.mark.parametrize(
    ("name", "dtype", "scale"),
    [
        ("ddpm", torch.long, 1),
        ("ddim", torch.long, 1),
        ("sm", torch.float32, 1000),
        ("fm", torch.float32, 1000),
    ],
)
def test_the_denoiser_time_input_is_the_same_in_loss_and_sampling(
    name: str, dtype: torch.dtype, scale: int
) -> None:
    formulation = build_formulation(name, num_steps=10, sample_steps=5)
    t = formulation.draw_times(6, torch_generator(0), "cpu")
    recorder = Recorder()
    formulation.loss(recorder, torch.randn(6, 2), None, t=t, noise=torch.randn(6, 2))
    assert recorder.times[0].dtype == dtype
    assert torch.allclose(recorder.times[0].double(), scale * t.double())
    recorder = Recorder()
    result = formulation.sample(recorder, (3, 2), None, torch_generator(1))
    # One denoiser call per reverse step; num_steps counts them.
    assert len(recorder.times) == len(result.steps) == formulation.num_steps
    for step, seen in zip(result.steps, recorder.times, strict=True):
        assert seen.dtype == dtype and seen.shape == (3,)
        assert torch.allclose(seen.double(), torch.full((3,), scale * step.t, dtype=torch.float64))


@pytest.mark.parametrize("name", NAMES)
def test_loss_with_given_t_and_noise_is_deterministic(name: str) -> None:
    formulation = build_formulation(name, num_steps=10)
    model = nn.Linear(2, 2)
    x0 = torch.randn(16, 2, generator=torch_generator(0))
    t = formulation.draw_times(16, torch_generator(1), "cpu")
    noise = torch.randn(16, 2, generator=torch_generator(2))
    generator = torch_generator(3)
    state = generator.get_state()

    def denoiser(z_t: Tensor, time: Tensor, cond: Any) -> Tensor:
        return model(z_t) * (1 + time.float()[:, None] / 1000)

    first = formulation.loss(denoiser, x0, None, generator, t=t, noise=noise)
    second = formulation.loss(denoiser, x0, None, generator, t=t, noise=noise)
    assert torch.equal(first, second) and first.shape == (16,)
    assert torch.equal(generator.get_state(), state)  # nothing was drawn
    other_noise = formulation.loss(denoiser, x0, None, t=t, noise=noise.flip(0))
    assert not torch.allclose(first, other_noise)
    # A given t alone fixes t; the noise is then drawn from the generator.
    a = formulation.loss(denoiser, x0, None, torch_generator(4), t=t)
    b = formulation.loss(denoiser, x0, None, torch_generator(4), t=t)
    assert torch.equal(a, b) and not torch.allclose(a, first)


@pytest.mark.parametrize("name", NAMES)
def test_draw_times_are_in_the_formulations_units_and_snr_decreases(name: str) -> None:
    formulation = build_formulation(name, num_steps=50)
    t = formulation.draw_times(4000, torch_generator(0), "cpu").sort().values
    if name in ("ddpm", "ddim"):
        assert t.dtype == torch.long and int(t.min()) == 1 and int(t.max()) == 50
        t = torch.arange(1, 51)
    else:
        assert t.dtype == torch.float32 and 0.0 <= float(t.min()) < 0.01
        assert 0.99 < float(t.max()) <= 1.0
        t = t[t > 0]
    snr = formulation.snr(t)
    assert snr.shape == t.shape and bool(torch.isfinite(snr).all())
    # Non-increasing everywhere (equal times give equal SNR), strictly across distinct times.
    assert bool((snr[1:] <= snr[:-1]).all())
    distinct = torch.unique(t)
    snr_distinct = formulation.snr(distinct)
    assert bool((snr_distinct[1:] < snr_distinct[:-1]).all())


@pytest.mark.parametrize("name", NAMES)
def test_loss_rejects_times_in_the_wrong_units(name: str) -> None:
    formulation = build_formulation(name, num_steps=10)
    x0 = torch.randn(4, 2)
    # Float steps for DDPM/DDIM (5.0 would cast to a valid step), integer steps for SM/FM.
    wrong = torch.full((4,), 5.0) if name in ("ddpm", "ddim") else torch.full((4,), 5)
    with pytest.raises(ValueError, match="t must"):
        formulation.loss(Recorder(), x0, None, t=wrong)


class MixtureNet(nn.Module):
    """An MLP over z, the time input divided by `scale` and a few of its sin/cos features."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.register_buffer("freq", math.pi * torch.arange(1.0, 5.0))
        self.net = nn.Sequential(
            nn.Linear(10, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 1)
        )

    def forward(self, z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        tau = (t.to(z_t.dtype) / self.scale)[:, None]
        waves = [torch.sin(self.freq * tau), torch.cos(self.freq * tau)]
        return self.net(torch.cat([z_t, tau, *waves], dim=1))


# 0.3 N(-0.6, 0.05^2) + 0.7 N(0.6, 0.05^2). DDPM/DDIM use T = 50 (20 steps blur the narrow modes).
T_MIX, WEIGHT, CENTRE, WIDTH = 50, 0.7, 0.6, 0.05


@functools.cache
def trained(objective: str) -> nn.Module:
    """A MixtureNet trained with `objective`'s loss (cached: DDIM trains as DDPM, SM once)."""
    torch.manual_seed(0)
    gen = torch_generator(0)
    formulation = build_formulation(objective, num_steps=T_MIX)
    model = MixtureNet(T_MIX if objective == "ddpm" else 1000.0)
    iters = 1500
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    lr_decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    for _ in range(iters):
        upper = torch.rand(256, 1, generator=gen) < WEIGHT
        x0 = torch.where(upper, CENTRE, -CENTRE) + WIDTH * torch.randn(256, 1, generator=gen)
        loss = formulation.loss(model, x0, None, gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        lr_decay.step()
    return model.eval()


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("ddpm", {}),
        ("ddim", {}),  # deterministic (eta 0) over all 50 steps
        ("sm", {"sampler": "sde", "sample_steps": 50}),
        ("sm", {"sampler": "ode", "sample_steps": 50}),
        ("fm", {"sample_steps": 20}),
    ],
)
def test_trained_formulation_samples_both_modes_in_proportion(
    name: str, kwargs: dict[str, Any], one_thread: None
) -> None:
    model = trained("ddpm" if name == "ddim" else name)
    formulation = build_formulation(name, num_steps=T_MIX, **kwargs)
    with torch.no_grad():
        x = formulation.sample(model, (4000, 1), None, torch_generator(1), record=False).x0
    assert abs(float((x > 0).float().mean()) - WEIGHT) < 0.08
    assert float((x.abs() < 0.3).float().mean()) < 0.06  # very few between the modes
    assert abs(float(x[x > 0].mean()) - CENTRE) < 0.1
    assert abs(float(x[x < 0].mean()) + CENTRE) < 0.1
