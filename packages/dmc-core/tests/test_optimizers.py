"""`dmc_core.training.adam`: the stages' one optimiser factory."""

from __future__ import annotations

import torch
from torch import nn

from dmc_core.training import adam


def _trained(optimizer_for, steps: int = 20) -> list[torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8), nn.Linear(8, 1))
    optimizer = optimizer_for(net.parameters())
    x, y = torch.randn(32, 3), torch.randn(32, 1)
    for _ in range(steps):
        optimizer.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        optimizer.step()
    return [p.detach().clone() for p in net.parameters()]


def test_weight_decay_picks_adamw_and_both_step_every_tensor_at_once() -> None:
    parameters = [nn.Parameter(torch.zeros(2))]
    plain, decayed = adam(parameters, 1e-3), adam(parameters, 1e-3, weight_decay=0.1)
    assert type(plain) is torch.optim.Adam and type(decayed) is torch.optim.AdamW
    assert plain.defaults["foreach"] and decayed.defaults["foreach"]
    assert decayed.defaults["weight_decay"] == 0.1


def test_multi_tensor_steps_give_the_same_numbers_as_one_tensor_at_a_time() -> None:
    for decay in (None, 0.01):
        fast = _trained(lambda p, d=decay: adam(p, 1e-2, d))
        kwargs = {} if decay is None else {"weight_decay": decay}
        kind = torch.optim.Adam if decay is None else torch.optim.AdamW
        slow = _trained(lambda p, k=kind, kw=kwargs: k(p, lr=1e-2, foreach=False, **kw))
        assert all(torch.equal(a, b) for a, b in zip(fast, slow, strict=True))
