"""Sample-and-select pays on a real foundation model: q_argmax @ 16 beats one sample.

A small Diffuser and an IQL critic are trained on a Nav1D `full`-style dataset (random actions,
uniform starts), then evaluated from the same episode seeds with one sample and with the best
of 16 candidates by Q (IDQL's selection).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from dmc_core.data import TransitionDataset
from dmc_core.models import ModelSpec, load_model
from dmc_core.models.spec import FormulationSpec, TrainSpec
from dmc_core.pretrain import TrainingRun
from dmc_core.seeding import torch_generator
from dmc_core.testing import torch_threads
from dmc_core.training import World
from dmc_critic import CriticSpec, CriticTrainSpec, TransitionSampler, build_critic, fit_iql
from dmc_envs.evaluation import ModelProposer, Selection, roll_out
from dmc_envs.nav1d import Nav1DTask, UniformPolicy, rollout
from dmc_envs.tasks import build_task


@pytest.fixture
def two_threads() -> Iterator[None]:
    with torch_threads(2):
        yield


def full_dataset(task: Nav1DTask, episodes: int) -> TransitionDataset:
    rng = np.random.default_rng(2)
    data = rollout(task, UniformPolicy(), rng.uniform(-1.0, 1.0, size=episodes), rng)
    return TransitionDataset(**data, attrs={})


def test_q_argmax_with_16_candidates_beats_one_sample_for_a_foundation_diffuser(
    tmp_path: Path, two_threads: None
) -> None:
    task = Nav1DTask.from_params()
    dataset = full_dataset(task, 1000)
    spec = ModelSpec(
        kind="diffuser",
        horizon=4,
        backbone={"name": "unet", "dim": 16, "dim_mults": [1, 2]},
        formulation=FormulationSpec(steps=10),
        train=TrainSpec(steps=800, batch_size=128, warmup_steps=50, checkpoint_every=800),
    )
    world = World(0, 1, torch.device("cpu"))
    TrainingRun(spec, dataset, tmp_path / "diffuser", world, 0, "diffuser").train()
    critic_spec = CriticSpec(hidden=128, train=CriticTrainSpec(steps=2500, lr=1e-3))
    torch.manual_seed(0)
    critic = build_critic(critic_spec, dataset)
    sampler = TransitionSampler(dataset, critic_spec)
    fit_iql(critic, sampler, critic_spec.train, torch_generator(0))
    proposer = ModelProposer(load_model(tmp_path / "diffuser" / "model.safetensors"))

    def score(selection: Selection) -> float:
        nav1d = build_task("nav1d", task.params)
        result = roll_out(nav1d, proposer, selection, critic.q_chunk, episodes=32, seed=1000)
        return float(nav1d.returns.normalized(result.returns.mean()))

    one, best = score(Selection("none", 1)), score(Selection("q_argmax", 16))
    print(f"normalised score: none @ 1 {one:.1f}, q_argmax @ 16 {best:.1f}")
    assert best > one + 10.0, (one, best)
