"""Foundation models: windows, normalisation, in-painting masks, shapes, conditioning, I/O."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dmc_core.config import load_stage_config
from dmc_core.errors import CheckpointError, ConfigError
from dmc_core.models import (
    ModelSpec,
    RangeNormalizer,
    WindowSampler,
    build_model,
    load_model,
    prefix_mask,
    save_model,
    training_mask,
)
from dmc_core.pretrain import PretrainConfig
from dmc_core.seeding import torch_generator
from dmc_core.testing import toy_dataset

BACKBONES = {
    "unet": {"name": "unet", "dim": 8, "dim_mults": [1, 2]},
    "dit": {"name": "dit", "d_model": 16, "depth": 1, "heads": 2},
    "mlp": {"name": "mlp", "hidden": 16, "blocks": 1},
}
KINDS = {
    "diffuser": {"kind": "diffuser", "horizon": 4},
    "decision_diffuser": {"kind": "decision_diffuser", "horizon": 4, "action_exec": 2},
    "diffusion_policy": {
        "kind": "diffusion_policy",
        "horizon": 4,
        "history": 2,
        "action_exec": 2,
        "inpainting": "none",
    },
}


def make_spec(kind: str, backbone: str = "mlp", **changes: object) -> ModelSpec:
    return ModelSpec(**{**KINDS[kind], "backbone": BACKBONES[backbone], **changes})  # type: ignore[arg-type]


def histories(model: torch.nn.Module, batch: int = 5) -> torch.Tensor:
    return torch.rand(batch, model.history_len, model.obs_dim, generator=torch_generator(3))


# Windows ----------------------------------------------------------------------------------


def test_windows_follow_the_episode_and_mark_padding() -> None:
    data = toy_dataset(episodes=3, horizon=4)
    sampler = WindowSampler(data, horizon=3, history=2)
    assert sampler.num_starts == 12
    window = sampler.window(torch.tensor([0, 2, 7]))
    obs, nxt, act = data.observations, data.next_observations, data.actions
    # Start 0: first step of episode 0, history pads with the first observation.
    assert np.allclose(window.history[0].numpy(), obs[[0, 0]])
    assert np.allclose(window.states[0].numpy(), obs[0:3])
    assert np.allclose(window.actions[0].numpy(), act[0:3])
    assert window.steps[0].tolist() == [True, True, True]
    # Start 2: two transitions left in the episode, then the final state repeated, zero action.
    assert window.steps[1].tolist() == [True, True, False]
    assert window.state_known[1].tolist() == [True, True, True]
    assert np.allclose(window.states[1].numpy(), np.stack([obs[2], obs[3], nxt[3]]))
    assert np.allclose(window.actions[1, 2].numpy(), 0.0)
    # Start 7: last step of episode 1 (rows 4..7): its history is rows 6, 7.
    assert np.allclose(window.history[2].numpy(), obs[6:8])
    assert window.steps[2].tolist() == [True, False, False]
    assert window.state_known[2].tolist() == [True, True, False]


def test_window_starts_cover_every_transition_uniformly() -> None:
    sampler = WindowSampler(toy_dataset(episodes=2, horizon=5), horizon=2, history=1)
    window = sampler.sample(20000, torch_generator(0))
    firsts = window.states[:, 0, 0]
    counts = torch.unique(firsts, return_counts=True)[1]
    assert counts.numel() == 10
    assert (counts - 2000).abs().max() < 200


def test_window_sampler_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="horizon"):
        WindowSampler(toy_dataset(), horizon=0, history=1)


# Normalisation and masks -------------------------------------------------------------------


def test_range_normalizer_maps_the_data_range_to_unit_interval() -> None:
    data = np.array([[0.0, 5.0, 1.0], [2.0, 9.0, 1.0]], dtype=np.float32)
    norm = RangeNormalizer.fit(data)
    x = torch.from_numpy(data)
    assert torch.allclose(norm.normalize(x), torch.tensor([[-1.0, -1.0, 0.0], [1.0, 1.0, 0.0]]))
    assert torch.allclose(norm.unnormalize(norm.normalize(x)), x)


def test_prefix_mask_knows_past_states_and_actions_only() -> None:
    mask = prefix_mask(torch.tensor([1, 3]), horizon=4, state_dim=2, dim=3)
    # Sample 0: only s_0 is known.
    assert mask[0, 0].tolist() == [True, True, False]
    assert not mask[0, 1:].any()
    # Sample 1: s_0..s_2 known, a_0..a_1 known, a_2 and step 3 free.
    assert mask[1, :3, :2].all() and mask[1, :2, 2].all()
    assert not mask[1, 2, 2] and not mask[1, 3].any()


def test_training_masks_by_mode() -> None:
    gen = torch_generator(0)
    assert training_mask("none", 4, 8, 2, 3, gen) is None
    first = training_mask("first_state", 4, 8, 2, 3, gen)
    assert first is not None and int(first.sum()) == 4 * 2
    causal = training_mask("causal_prefix", 500, 8, 2, 3, gen)
    assert causal is not None
    prefixes = causal[:, :, 0].sum(dim=1)
    assert set(prefixes.tolist()) == {1, 2, 3, 4}  # 1..H/2, all drawn
    with pytest.raises(ValueError, match="unknown in-painting mode"):
        training_mask("everything", 4, 8, 2, 3, gen)


# Every model with every backbone -------------------------------------------------------------


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_model_shapes_and_decoded_actions(kind: str, backbone: str) -> None:
    data = toy_dataset(episodes=4, horizon=6)
    model = build_model(make_spec(kind, backbone), data)
    history = histories(model)
    result = model.sample(history, torch_generator(0))
    assert result.x0.shape == (5, 4, model.transition_dim)
    assert len(result.steps) == 20
    assert model.decode_actions(result.x0).shape == (5, model.spec.action_exec, 1)
    assert model.act(history, torch_generator(0)).shape == (5, model.spec.action_exec, 1)
    window = WindowSampler(data, model.horizon, model.history_len).sample(8, torch_generator(1))
    loss = model(window, torch_generator(2))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)


@pytest.mark.parametrize("kind", ["diffuser", "decision_diffuser"])
def test_planners_inpaint_the_current_observation_exactly(kind: str) -> None:
    model = build_model(make_spec(kind, "unet"), toy_dataset())
    history = histories(model)
    result = model.sample(history, torch_generator(0), std_floor=0.05)
    start = model.obs_normalizer.normalize(history[:, -1])
    assert torch.equal(result.x0[:, 0, : model.obs_dim], start)
    for step in result.steps:
        assert torch.equal(step.z_prev[:, 0, : model.obs_dim], start)


def test_policy_output_depends_on_its_observation_history() -> None:
    model = build_model(make_spec("diffusion_policy", "mlp"), toy_dataset())
    history = histories(model)
    a = model.sample(history, torch_generator(0), record=False).x0
    b = model.sample(history + 0.5, torch_generator(0), record=False).x0
    assert not torch.allclose(a, b)


def test_the_condition_is_the_normalised_history_with_its_fourier_features() -> None:
    spec = make_spec("diffusion_policy", "mlp", condition_fourier=2)
    model = build_model(spec, toy_dataset())
    history = histories(model)
    x = model.obs_normalizer.normalize(history).flatten(1)  # (B, To * obs_dim)
    by_hand = [x]
    for function in (torch.sin, torch.cos):
        by_hand += [function(math.pi * 2.0**k * x) for k in range(2)]
    cond, inpaint = model.condition(history)
    assert inpaint is None
    assert model.cond_dim == x.shape[1] * 5
    torch.testing.assert_close(cond, torch.cat(by_hand, dim=1))


@pytest.mark.parametrize("kind", ["diffuser", "decision_diffuser"])
def test_a_planner_with_film_observation_feeds_its_observation_to_the_network(kind: str) -> None:
    plain = build_model(make_spec(kind, "unet"), toy_dataset())
    spec = make_spec(kind, "unet", film_observation=True, condition_fourier=1)
    film = build_model(spec, toy_dataset())
    assert plain.cond_dim == 0 and plain.condition(histories(plain))[0] is None
    assert film.cond_dim == 3 * film.obs_dim
    history = histories(film)
    cond, inpaint = film.condition(history)
    current = film.obs_normalizer.normalize(history[:, -1])
    torch.testing.assert_close(cond[:, : film.obs_dim], current)
    assert inpaint is not None and torch.equal(inpaint[1][:, 0, : film.obs_dim], current)
    # the condition reaches the network in training and in sampling: the encoder's first layer
    # (its weight multiplies the condition itself) gets a gradient and changes the samples
    first = next(m for m in film.net.embed.cond.modules() if isinstance(m, torch.nn.Linear))
    sampler = WindowSampler(toy_dataset(), film.horizon, film.history_len)
    window = sampler.sample(8, torch_generator(1))
    film(window, torch_generator(2)).backward()
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0
    a = film.sample(history, torch_generator(0), record=False).x0
    with torch.no_grad():
        first.weight.add_(0.5)
    b = film.sample(history, torch_generator(0), record=False).x0
    assert not torch.allclose(a[:, 1:], b[:, 1:])


def test_loss_weights_leave_out_padding_and_weight_the_first_action(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = build_model(make_spec("diffuser", "mlp", action_weight=10.0), toy_dataset())
    window = WindowSampler(toy_dataset(), 4, 1).window(torch.tensor([0, 2, 3]))
    seen: dict[str, torch.Tensor] = {}
    real_loss = model.formulation.loss

    def spy(net, x0, cond, generator, mask, weights):  # type: ignore[no-untyped-def]
        seen["x0"], seen["mask"], seen["weights"] = x0, mask, weights
        return real_loss(net, x0, cond, generator, mask, weights)

    monkeypatch.setattr(model.formulation, "loss", spy)
    model(window, torch_generator(5))
    weights = seen["weights"]
    assert torch.equal(weights[..., 0] > 0, window.steps)  # state channel: real steps only
    assert torch.equal(weights[:, 0, 1], torch.full((3,), 10.0))  # a_0, weighted
    assert torch.equal(weights[:, 1:, 1], window.steps[:, 1:].float())
    # The in-painted start state is known in every training window (causal_prefix >= 1 step).
    assert seen["mask"][:, 0, 0].all()


def test_the_denoising_loss_of_alignment_weights_the_first_action_as_training_does() -> None:
    # SFT, DPO and the likelihood filter train and score with `denoising_loss`: an unweighted
    # loss would let fine-tuning value the executed action a_0 like any other plan entry.
    model = build_model(make_spec("diffuser", "mlp", action_weight=10.0), toy_dataset())
    history = histories(model, batch=3)
    z0 = model.sample(history, torch_generator(1), record=False).x0
    t = torch.tensor([3, 7, 12])
    noise = torch.randn(z0.shape, generator=torch_generator(2))
    loss = model.denoising_loss(z0, history, t=t, noise=noise)

    z_t = model.formulation.q_sample(z0, t, noise)
    z_t[:, 0, : model.obs_dim] = z0[:, 0, : model.obs_dim]  # s_0 in-painted
    error = (model.net(z_t, t, None) - noise).pow(2)
    error[:, 0, model.obs_dim :] *= 10.0
    free = model.horizon * model.transition_dim - model.obs_dim
    by_hand = error[:, 1:].flatten(1).sum(1) + error[:, 0, model.obs_dim :].sum(1)
    torch.testing.assert_close(loss, by_hand / free)


def test_decision_diffuser_actions_come_from_inverse_dynamics() -> None:
    model = build_model(make_spec("decision_diffuser", "mlp"), toy_dataset())
    z0 = torch.randn(3, 4, model.obs_dim)
    expected = model.act_normalizer.unnormalize(model.infer_actions(z0[:, :2], z0[:, 1:3]))
    assert torch.allclose(model.decode_actions(z0), expected)


# Specs and checkpoints -----------------------------------------------------------------------


def test_a_checkpoint_alone_rebuilds_the_model(tmp_path: Path) -> None:
    model = build_model(make_spec("diffuser", "unet"), toy_dataset())
    path = save_model(tmp_path / "model.safetensors", model, {"note": "test"})
    loaded = load_model(path)
    history = histories(model)
    same = loaded.sample(history, torch_generator(4), record=False).x0
    assert torch.equal(model.sample(history, torch_generator(4), record=False).x0, same)
    assert torch.equal(loaded.obs_normalizer.low, model.obs_normalizer.low)


def test_loading_a_checkpoint_of_something_else_fails_clearly(tmp_path: Path) -> None:
    from dmc_core.checkpoint import save_checkpoint

    path = save_checkpoint(tmp_path / "x.safetensors", {"w": torch.ones(2)}, {"kind": "other"})
    with pytest.raises(CheckpointError, match="not a dmc control-model checkpoint"):
        load_model(path)


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"kind": "diffusion_policy", "inpainting": "causal_prefix"}, "models.m.inpainting"),
        ({"kind": "diffuser", "history": 2}, "models.m.history"),
        ({"kind": "diffuser", "horizon": 4, "action_exec": 5}, "models.m.action_exec"),
        ({"backbone": {"name": "unet", "widths": 3}}, "models.m.backbone.widths"),
        ({"backbone": {"name": "lstm"}}, "models.m.backbone.name"),
        (
            {"formulation": {"name": "ddim", "steps": 10, "sample_steps": 20}},
            "models.m.formulation.sample_steps",
        ),
        (
            {"kind": "diffusion_policy", "inpainting": "none", "film_observation": True},
            "models.m.film_observation",
        ),
        ({"kind": "diffuser", "condition_fourier": 2}, "models.m.condition_fourier"),
    ],
)
def test_invalid_model_entries_name_the_key(tmp_path: Path, entry: dict, key: str) -> None:
    import yaml

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"base": {}, "pretrain": {"models": {"m": entry}}}))
    with pytest.raises(ConfigError, match=f"pretrain.{key}"):
        load_stage_config(PretrainConfig, "pretrain", params)


def test_weights_of_the_wrong_shape_name_the_file_and_the_first_tensor(tmp_path: Path) -> None:
    import yaml

    from dmc_core.checkpoint import sidecar_path

    model = build_model(make_spec("diffusion_policy"), toy_dataset())
    path = save_model(tmp_path / "model.safetensors", model)
    side = yaml.safe_load(sidecar_path(path).read_text())
    side["config"]["spec"]["backbone"]["hidden"] = 24  # the weights are 16 wide
    sidecar_path(path).write_text(yaml.safe_dump(side))
    with pytest.raises(CheckpointError, match=rf"^{path}: weights do not fit the recorded spec: '"):
        load_model(path)
