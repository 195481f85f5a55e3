"""The bottleneck diffusion model: eps is -sigma x grad f, training, sampling, I/O, the spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from dmc_core.config import load_stage_config
from dmc_core.errors import ConfigError
from dmc_core.models import (
    BottleneckDiffusionModel,
    ModelSpec,
    TrainSpec,
    WindowSampler,
    build_model,
    load_model,
    save_model,
)
from dmc_core.models.spec import FormulationSpec
from dmc_core.pretrain import PretrainConfig, TrainingRun
from dmc_core.seeding import torch_generator
from dmc_core.testing import toy_dataset
from dmc_core.training import World

pytestmark = pytest.mark.usefixtures("one_thread")


def bdm_spec(formulation: str = "ddpm", **changes: object) -> ModelSpec:
    settings: dict[str, object] = {
        "kind": "bdm",
        "horizon": 3,
        "history": 2,
        "action_exec": 2,
        "inpainting": "none",
        "backbone": {"name": "mlp", "hidden": 16, "blocks": 1, "embed_dim": 8},
        "formulation": FormulationSpec(name=formulation, steps=6),
        **changes,
    }
    return ModelSpec(**settings)  # type: ignore[arg-type]


def make_bdm(formulation: str = "ddpm") -> BottleneckDiffusionModel:
    torch.manual_seed(0)
    model = build_model(bdm_spec(formulation), toy_dataset())
    assert isinstance(model, BottleneckDiffusionModel)
    return model


def histories(model: torch.nn.Module, batch: int = 5) -> torch.Tensor:
    return torch.rand(batch, model.history_len, model.obs_dim, generator=torch_generator(3))


def expected_sigma(model: BottleneckDiffusionModel, t: torch.Tensor) -> torch.Tensor:
    """sigma_t computed from the formulation's own marginal, not through the model."""
    formulation = model.formulation
    if formulation.name == "sm":
        return formulation.marginal(t)[1].float()  # type: ignore[attr-defined]
    abar = formulation.schedule.alphas_cumprod[t - 1]  # type: ignore[attr-defined]
    return (1.0 - abar).sqrt().float()


@pytest.mark.parametrize("formulation", ["ddpm", "sm"])
@pytest.mark.parametrize("grad_mode", [True, False])
def test_noise_prediction_is_minus_sigma_times_the_gradient_of_f(
    formulation: str, grad_mode: bool
) -> None:
    model = make_bdm(formulation)
    history = histories(model)
    z_t = torch.randn(5, model.horizon, model.act_dim, generator=torch_generator(1))
    t = model.formulation.draw_times(5, torch_generator(2), "cpu")
    cond, _ = model.condition(history)
    # Independent autograd: f of a leaf copy, differentiated by hand.
    leaf = z_t.clone().requires_grad_(True)
    f = model.net.backbone(leaf, model.formulation.network_time(t), cond).sum(dim=(1, 2))
    (grad,) = torch.autograd.grad(f.sum(), leaf)
    want = -expected_sigma(model, t)[:, None, None] * grad
    with torch.set_grad_enabled(grad_mode):
        eps = model.net(z_t, model.formulation.network_time(t), cond)
    torch.testing.assert_close(eps, want, rtol=1e-5, atol=1e-6)
    assert eps.requires_grad == grad_mode
    torch.testing.assert_close(model.energy(z_t, history, t), f.detach())


def test_the_training_loss_back_propagates_through_the_gradient() -> None:
    model = make_bdm()
    data = toy_dataset()
    window = WindowSampler(data, model.horizon, model.history_len).sample(8, torch_generator(0))
    loss = model.training_loss(window, torch_generator(1))
    loss.backward()
    # Only f's constant (the output bias) has no say in grad f; every other weight does.
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert silent == ["net.backbone.output.bias"]


def test_a_step_of_training_lowers_the_denoising_loss_of_its_batch() -> None:
    model = make_bdm()
    data = toy_dataset()
    window = WindowSampler(data, model.horizon, model.history_len).sample(32, torch_generator(0))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    before = float(model.training_loss(window, torch_generator(1)).detach())
    for _ in range(3):
        optimizer.zero_grad()
        model.training_loss(window, torch_generator(1)).backward()
        optimizer.step()
    assert float(model.training_loss(window, torch_generator(1)).detach()) < before


@pytest.mark.parametrize("formulation", ["ddpm", "ddim", "sm"])
def test_it_samples_actions_of_the_right_shape_under_no_grad(formulation: str) -> None:
    model = make_bdm(formulation)
    history = histories(model)
    with torch.no_grad():
        x0 = model.sample(history, torch_generator(4), record=False).x0
        actions = model.act(history, torch_generator(4))
    assert x0.shape == (5, model.horizon, model.act_dim) and not x0.requires_grad
    assert actions.shape == (5, 2, model.act_dim) and torch.isfinite(actions).all()
    assert torch.equal(actions, model.decode_actions(x0))


def test_sampling_with_gradients_reaches_the_weights() -> None:
    model = make_bdm()
    x0 = model.sample(histories(model), torch_generator(4), grad_last_k=2, record=False).x0
    x0.sum().backward()
    assert model.net.backbone.input.weight.grad is not None
    assert model.net.backbone.input.weight.grad.any()


def test_log_density_is_f_of_the_normalised_chunk_at_the_least_noisy_step() -> None:
    model = make_bdm()
    history = histories(model)
    actions = torch.rand(5, model.horizon, model.act_dim, generator=torch_generator(5))
    z = model.act_normalizer.normalize(actions)
    one = torch.ones(5, dtype=torch.long)
    with torch.no_grad():
        value = model.log_density(history, actions)
    assert value.shape == (5,)
    torch.testing.assert_close(value, model.energy(z, history, one))
    assert not torch.allclose(value, model.energy(z, history, one * 4))


def test_a_saved_bdm_loads_with_the_same_weights_and_samples(tmp_path: Path) -> None:
    model = make_bdm("sm")
    path = save_model(tmp_path / "model.safetensors", model)
    loaded = load_model(path)
    assert isinstance(loaded, BottleneckDiffusionModel) and loaded.spec == model.spec
    for name, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    history = histories(model)
    with torch.no_grad():
        want = model.sample(history, torch_generator(6), record=False).x0
        got = loaded.sample(history, torch_generator(6), record=False).x0
    assert torch.equal(want, got)


def test_pretrain_trains_and_saves_a_bdm(tmp_path: Path) -> None:
    spec = bdm_spec(train=TrainSpec(steps=12, batch_size=16, checkpoint_every=6, log_every=4))
    world = World(rank=0, size=1, device=torch.device("cpu"))
    run = TrainingRun(spec, toy_dataset(episodes=6, horizon=8), tmp_path, world, 0, "bdm")
    path = run.train()
    assert path is not None
    assert isinstance(load_model(path), BottleneckDiffusionModel)


def test_a_params_entry_of_kind_bdm_validates(tmp_path: Path) -> None:
    entry = {
        "kind": "bdm",
        "horizon": 4,
        "history": 2,
        "inpainting": "none",
        "backbone": {"name": "mlp", "hidden": 32, "blocks": 2},
        "formulation": {"name": "ddpm", "steps": 20, "schedule": "vp"},
    }
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"base": {}, "pretrain": {"models": {"m": entry}}}))
    config = load_stage_config(PretrainConfig, "pretrain", params)
    assert config.models["m"].kind == "bdm" and config.models["m"].is_policy
    entry["formulation"] = {"name": "fm", "steps": 20}
    params.write_text(yaml.safe_dump({"base": {}, "pretrain": {"models": {"m": entry}}}))
    with pytest.raises(ConfigError, match=r"pretrain\.models\.m\.formulation\.name"):
        load_stage_config(PretrainConfig, "pretrain", params)
