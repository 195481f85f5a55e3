"""Fixtures shared by the dmc-critic tests."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from dmc_core.data import TransitionDataset
from dmc_core.testing import torch_threads


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run the test on one thread: fastest for tiny tensors, and steady on a busy machine."""
    with torch_threads(1):
        yield


def bandit_dataset(rows: int = 64) -> TransitionDataset:
    """One-step episodes with reward = action: the critic must learn Q(s, a) = a."""
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(rows, 1)).astype(np.float32)
    obs = rng.uniform(-1, 1, size=(rows, 1)).astype(np.float32)
    attrs = {"env_id": "bandit", "dataset_kind": "toy", "behavior_policy": "uniform", "seed": 0}
    return TransitionDataset(
        observations=obs,
        actions=actions,
        rewards=actions[:, 0].copy(),
        terminals=np.ones(rows, dtype=bool),
        timeouts=np.zeros(rows, dtype=bool),
        next_observations=obs.copy(),
        attrs=attrs,
    )


@pytest.fixture
def bandit() -> TransitionDataset:
    """A 64-row one-step bandit dataset (see `bandit_dataset`)."""
    return bandit_dataset()
