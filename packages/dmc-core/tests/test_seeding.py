"""Seeding makes draws repeatable; different seeds give different draws."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from dmc_core.seeding import seed_everything, torch_generator


def draws(seed: int) -> tuple[float, float, float, float]:
    rng = seed_everything(seed)
    return random.random(), float(np.random.rand()), float(torch.rand(())), float(rng.random())


def test_same_seed_same_draws_and_other_seed_other_draws() -> None:
    assert draws(3) == draws(3)
    assert all(a != b for a, b in zip(draws(3), draws(4), strict=True))


def test_torch_generator_is_independent_of_global_state() -> None:
    first = torch.randn(5, generator=torch_generator(11))
    torch.manual_seed(0)
    torch.randn(100)
    assert torch.equal(first, torch.randn(5, generator=torch_generator(11)))


def test_negative_seed_is_rejected() -> None:
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)
