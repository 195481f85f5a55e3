"""Fixtures of the dmc-align tests: a small Nav1D dataset, tiny models (plain or with adapters
whose B is perturbed, so that they differ from their foundation) and an untrained critic."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch

from dmc_align.lora import attach_lora
from dmc_align.spec import LoraSpec
from dmc_core.data import TransitionDataset
from dmc_core.models import ControlModel, ModelSpec, WindowSampler, build_model
from dmc_core.models.spec import FormulationSpec
from dmc_core.seeding import torch_generator
from dmc_core.testing import torch_threads
from dmc_critic import CriticSpec, IQLCritic, build_critic
from dmc_envs.nav1d import ENV_ID, Nav1DTask, UniformPolicy, rollout

SPECS = {
    "policy": ModelSpec(
        kind="diffusion_policy",
        horizon=2,
        history=2,
        backbone={"name": "mlp", "hidden": 16, "blocks": 1, "embed_dim": 8},
        formulation=FormulationSpec(steps=6),
    ),
    "bdm": ModelSpec(
        kind="bdm",
        horizon=2,
        history=2,
        inpainting="none",
        backbone={"name": "mlp", "hidden": 16, "blocks": 1, "embed_dim": 8},
        formulation=FormulationSpec(steps=6),
    ),
    "diffuser": ModelSpec(
        kind="diffuser",
        horizon=4,
        backbone={"name": "unet", "dim": 8, "dim_mults": [1, 2]},
        formulation=FormulationSpec(steps=6),
    ),
}


def nav1d_dataset(episodes: int = 40, horizon: int = 8) -> TransitionDataset:
    """Uniform-random Nav1D episodes with the attributes evaluation rebuilds the task from."""
    task = Nav1DTask.from_params(horizon=horizon)
    rng = np.random.default_rng(0)
    policy = UniformPolicy()
    data = rollout(task, policy, rng.uniform(-1.0, 1.0, size=episodes), rng)
    attrs = {"env_id": ENV_ID, "env_kwargs": task.params, "behavior_policy_spec": policy.to_dict()}
    return TransitionDataset(**data, attrs=attrs)


def tiny_model(kind: str, dataset: TransitionDataset, lora: LoraSpec | None = None) -> ControlModel:
    """An untrained tiny model of `kind` (a key of SPECS) with fresh adapters whose B
    is perturbed, so that the adapted model differs from its foundation."""
    torch.manual_seed(0)
    model = attach_lora(build_model(SPECS[kind], dataset), lora or LoraSpec(rank=2, alpha=2.0))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.1)
    return model


KINDS = sorted(SPECS)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: one thread is fastest and steady on a busy machine."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def dataset() -> TransitionDataset:
    """40 episodes of 8 steps."""
    return nav1d_dataset()


@pytest.fixture
def plain(dataset: TransitionDataset) -> Callable[[str], ControlModel]:
    """plain(kind): an untrained tiny foundation of "policy", "bdm" or "diffuser" (seeded)."""

    def build(kind: str) -> ControlModel:
        torch.manual_seed(0)
        return build_model(SPECS[kind], dataset)

    return build


@pytest.fixture
def tiny(dataset: TransitionDataset) -> Callable[..., ControlModel]:
    """tiny(kind, lora=None): a tiny model with perturbed adapters (see `tiny_model`)."""
    return lambda kind, lora=None: tiny_model(kind, dataset, lora)


@pytest.fixture
def critic(dataset: TransitionDataset) -> IQLCritic:
    """An untrained small critic (its values are arbitrary but smooth in the action)."""
    torch.manual_seed(0)
    return build_critic(CriticSpec(hidden=16, layers=1), dataset).eval()


def fitted_weights(
    kind: str, dataset: TransitionDataset, steps: int = 1000
) -> dict[str, torch.Tensor]:
    """Weights of a tiny foundation of `kind` fitted for `steps` Adam steps to `dataset` (its
    samples then look like the data's actions, not like an untrained network's outliers)."""
    torch.manual_seed(0)
    model = build_model(SPECS[kind], dataset)
    windows = WindowSampler(dataset, model.horizon, model.history_len)
    generator = torch_generator(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch_threads(1):
        for _ in range(steps):
            loss = model.training_loss(windows.sample(64, generator), generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@pytest.fixture(scope="session")
def fitted(dataset: TransitionDataset) -> Callable[[str], ControlModel]:
    """fitted(kind): a fresh copy of a tiny "policy" or "bdm" foundation fitted to `dataset`
    (fitted once per session), without adapters."""
    cache: dict[str, dict[str, torch.Tensor]] = {}

    def build(kind: str) -> ControlModel:
        if kind not in cache:
            cache[kind] = fitted_weights(kind, dataset)
        model = build_model(SPECS[kind], dataset)
        model.load_state_dict(cache[kind])
        return model

    return build
