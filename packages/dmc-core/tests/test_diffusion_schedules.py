"""Noise schedules: hand-computed end values, valid betas, and the derived DDPM terms."""

from __future__ import annotations

import math

import pytest
import torch

from dmc_core.diffusion import NoiseSchedule, cosine_betas, linear_betas, make_betas, vp_betas


def test_vp_betas_match_the_discretised_vp_sde_by_hand() -> None:
    T, lo, hi = 3, 0.1, 20.0
    expected = [1 - math.exp(-lo / T - 0.5 * (hi - lo) * (2 * t - 1) / T**2) for t in (1, 2, 3)]
    betas = vp_betas(T)
    assert betas.dtype == torch.float64 and betas.shape == (3,)
    assert betas.tolist() == pytest.approx(expected, rel=1e-12)


def test_cosine_betas_match_nichol_dhariwal_by_hand_including_the_clip() -> None:
    s = 0.008

    def f(t: float) -> float:
        return math.cos((t / 2 + s) / (1 + s) * math.pi / 2) ** 2

    # alpha-bar(2) = f(2) / f(0) is ~0, so beta_2 = 1 would follow without the max_beta clip.
    expected = [1 - f(1) / f(0), 0.999]
    assert cosine_betas(2).tolist() == pytest.approx(expected, rel=1e-12)
    assert cosine_betas(2, max_beta=0.5).tolist()[1] == 0.5


def test_linear_betas_are_evenly_spaced_between_the_ends() -> None:
    assert linear_betas(3).tolist() == pytest.approx([1e-4, 1.005e-2, 2e-2], rel=1e-12)


@pytest.mark.parametrize("name", ["vp", "cosine", "linear"])
def test_betas_lie_in_0_1_and_alpha_bar_strictly_decreases(name: str) -> None:
    betas = make_betas(name, 50)
    assert betas.shape == (50,) and bool(((betas > 0) & (betas < 1)).all())
    abar = NoiseSchedule.from_betas(betas).alphas_cumprod
    assert bool((abar[1:] < abar[:-1]).all()) and 0 < float(abar[-1]) < float(abar[0]) < 1


def test_make_betas_dispatches_and_rejects_an_unknown_name() -> None:
    assert torch.equal(make_betas("vp", 7), vp_betas(7))
    assert torch.equal(make_betas("cosine", 7), cosine_betas(7))
    with pytest.raises(ValueError, match="sigmoid"):
        make_betas("sigmoid", 7)


def test_noise_schedule_terms_follow_from_the_betas() -> None:
    betas = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    sched = NoiseSchedule.from_betas(betas)
    abar = [0.9, 0.9 * 0.8, 0.9 * 0.8 * 0.7]
    assert sched.num_steps == 3
    assert sched.alphas.tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert sched.alphas_cumprod.tolist() == pytest.approx(abar)
    assert sched.alphas_cumprod_prev.tolist() == pytest.approx([1.0, *abar[:2]])
    assert sched.sqrt_alphas_cumprod.tolist() == pytest.approx([math.sqrt(a) for a in abar])
    assert sched.sqrt_one_minus_alphas_cumprod.tolist() == pytest.approx(
        [math.sqrt(1 - a) for a in abar]
    )
    # Posterior variance beta_t (1 - abar_{t-1}) / (1 - abar_t); exactly 0 at t = 1.
    expected = [0.0, 0.2 * (1 - abar[0]) / (1 - abar[1]), 0.3 * (1 - abar[1]) / (1 - abar[2])]
    assert sched.posterior_variance.tolist() == pytest.approx(expected)


@pytest.mark.parametrize("betas", [[0.1, 1.0], [0.0, 0.1], [[0.1]], []])
def test_noise_schedule_rejects_invalid_betas(betas: list[float]) -> None:
    with pytest.raises(ValueError, match="betas"):
        NoiseSchedule.from_betas(torch.tensor(betas, dtype=torch.float64))


def test_schedules_reject_zero_steps() -> None:
    with pytest.raises(ValueError, match="T must be"):
        vp_betas(0)
