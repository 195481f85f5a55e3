"""The IQL critic's scores, loss composition and Polyak update."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dmc_core.models.normalizer import RangeNormalizer
from dmc_critic import CriticSpec, IQLCritic, TransitionBatch, expectile_loss


def _critic(**changes: object) -> IQLCritic:
    torch.manual_seed(0)
    spec = CriticSpec(hidden=8, layers=2, fourier_frequencies=1, **changes)  # type: ignore[arg-type]
    obs = RangeNormalizer(torch.tensor([0.0, -2.0]), torch.tensor([4.0, 2.0]))
    act = RangeNormalizer(torch.tensor([-1.0]), torch.tensor([1.0]))
    return IQLCritic(spec, obs, act)


def _perturb(module: nn.Module, scale: float = 0.3) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def _batch(size: int = 6) -> TransitionBatch:
    generator = torch.Generator().manual_seed(1)
    return TransitionBatch(
        obs=4.0 * torch.rand(size, 2, generator=generator),
        act=2.0 * torch.rand(size, 1, generator=generator) - 1.0,
        reward=torch.randn(size, generator=generator),
        next_obs=4.0 * torch.rand(size, 2, generator=generator),
        done=torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0])[:size],
        steps=torch.ones(size),
    )


def test_q_is_the_min_of_the_target_twins_on_normalised_inputs() -> None:
    critic = _critic()
    _perturb(critic.q_nets)  # online and target now differ
    obs, act = torch.tensor([[2.0, 1.0], [0.0, -2.0]]), torch.tensor([[0.5], [-1.0]])
    normalised = torch.tensor([[0.0, 0.5, 0.5], [-1.0, -1.0, -1.0]])
    by_hand = torch.stack([net(normalised) for net in critic.q_targets]).min(dim=0).values
    torch.testing.assert_close(critic.q(obs, act), by_hand)
    online = torch.stack([net(normalised) for net in critic.q_nets]).min(dim=0).values
    assert not torch.allclose(critic.q(obs, act), online)
    torch.testing.assert_close(critic.v(obs), critic.v_net(normalised[:, :2]))
    assert critic.q(obs, act).shape == critic.v(obs).shape == (2,)


def test_q_lets_gradients_reach_the_action_but_no_parameter() -> None:
    critic = _critic()
    act = torch.zeros(3, 1, requires_grad=True)
    critic.q(torch.ones(3, 2), act).sum().backward()
    assert act.grad is not None and bool(act.grad.abs().sum() > 0)
    assert all(p.grad is None for p in critic.parameters())


def test_loss_is_v_expectile_against_target_min_plus_twin_td_with_detached_next_v() -> None:
    critic = _critic(expectile=0.8, discount=0.9)
    _perturb(critic.q_targets)
    batch = _batch()
    loss, metrics = critic.loss(batch)

    with torch.no_grad():
        target_q = torch.minimum(*critic.twin_q(batch.obs, batch.act, target=True))
        y = batch.reward + 0.9 * (1.0 - batch.done) * critic.v(batch.next_obs)
    v_loss = expectile_loss(target_q - critic.v(batch.obs), 0.8).mean()
    q1, q2 = critic.twin_q(batch.obs, batch.act)
    q_loss = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()
    torch.testing.assert_close(loss, v_loss + q_loss)
    assert metrics["v_loss"] == pytest.approx(v_loss.item(), rel=1e-5)
    assert metrics["q_loss"] == pytest.approx(q_loss.item(), rel=1e-5)

    # V's gradient comes from its expectile loss alone: V(s') in the TD target is detached.
    loss.backward()
    v_grads = [p.grad.clone() for p in critic.v_net.parameters()]  # type: ignore[union-attr]
    critic.zero_grad()
    v_loss.backward()
    for got, want in zip(v_grads, critic.v_net.parameters(), strict=True):
        torch.testing.assert_close(got, want.grad)
    assert all(p.grad is None for p in critic.q_targets.parameters())


def test_update_target_is_an_exact_polyak_step() -> None:
    critic = _critic(target_update=0.25)
    _perturb(critic.q_nets)
    before = copy.deepcopy(critic.q_targets.state_dict())
    online = copy.deepcopy(critic.q_nets.state_dict())
    critic.update_target()
    after = critic.q_targets.state_dict()
    for name, value in after.items():
        torch.testing.assert_close(value, 0.75 * before[name] + 0.25 * online[name])
        assert not torch.equal(value, before[name])
    for name, value in critic.q_nets.state_dict().items():
        assert torch.equal(value, online[name])


def test_trainable_parameters_leave_out_the_targets_and_targets_start_equal() -> None:
    critic = _critic()
    trainable = {id(p) for p in critic.trainable_parameters()}
    assert trainable == {id(p) for p in [*critic.q_nets.parameters(), *critic.v_net.parameters()]}
    for a, b in zip(critic.q_nets.parameters(), critic.q_targets.parameters(), strict=True):
        assert torch.equal(a, b) and not b.requires_grad
    q1, q2 = critic.q_nets
    assert not torch.equal(q1.net[1].weight, q2.net[1].weight)  # independent twins


def test_networks_activate_every_hidden_layer_and_apply_layer_norm_when_asked() -> None:
    kinds = [type(m).__name__ for m in _critic().v_net.net]
    assert kinds == [
        *("FourierFeatures", "Linear", "LayerNorm", "ReLU", "Linear", "LayerNorm", "ReLU"),
        "Linear",
    ]
    plain = [type(m).__name__ for m in _critic(layer_norm=False).v_net.net]
    assert "LayerNorm" not in plain and plain[-2:] == ["ReLU", "Linear"]


def test_wrong_input_shapes_are_rejected() -> None:
    critic = _critic()
    with pytest.raises(ValueError, match="obs must have shape"):
        critic.v(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="batch mismatch"):
        critic.q(torch.zeros(3, 2), torch.zeros(4, 1))


def test_describe_records_the_rebuild_recipe() -> None:
    described = _critic().describe()
    assert described["kind"] == "iql" and described["obs_dim"] == 2 and described["act_dim"] == 1
    assert described["spec"]["hidden"] == 8 and described["spec"]["train"]["steps"] == 10000
