"""Denoiser backbones: shapes, gradient flow, conditioning, input checks, registry, embeddings."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from dmc_core.nets import (
    BACKBONES,
    DiT1d,
    ResidualMLP,
    TemporalUNet,
    backbone_sizes,
    build_backbone,
    mlp,
    sinusoidal_embedding,
)

NAMES = sorted(BACKBONES)
# Small sizes keep the file fast; the defaults are covered by `test_default_sizes_build_and_run`.
SMALL: dict[str, dict[str, Any]] = {
    "unet": {"dim": 16, "dim_mults": (1, 2)},
    "dit": {"d_model": 32, "depth": 2, "heads": 4},
    "mlp": {"hidden": 32, "blocks": 2, "expansion": 2},
}


def make(name: str, horizon: int = 8, transition_dim: int = 3, cond_dim: int = 0) -> nn.Module:
    return build_backbone(
        name, horizon=horizon, transition_dim=transition_dim, cond_dim=cond_dim, **SMALL[name]
    )


def inputs(
    batch: int, horizon: int, dim: int, cond_dim: int, float_t: bool = False
) -> tuple[Tensor, Tensor, Tensor | None]:
    x = torch.randn(batch, horizon, dim)
    t = torch.randint(1, 101, (batch,))
    if float_t:
        t = t.float() * 0.37
    cond = torch.randn(batch, cond_dim) if cond_dim else None
    return x, t, cond


@torch.no_grad()
def perturb_zero_init(net: nn.Module) -> None:
    """Give every all-zero parameter (adaLN-Zero, DiT's output layer, zero biases) small noise."""
    for p in net.parameters():
        if not p.any():
            p.add_(0.1 * torch.randn_like(p))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("horizon", "dim", "cond_dim"), [(8, 3, 0), (16, 5, 4), (4, 1, 2)])
@pytest.mark.parametrize("float_t", [False, True])
def test_output_shape(name: str, horizon: int, dim: int, cond_dim: int, float_t: bool) -> None:
    net = make(name, horizon, dim, cond_dim)
    x, t, cond = inputs(3, horizon, dim, cond_dim, float_t)
    out = net(x, t, cond)
    assert out.shape == (3, horizon, dim)
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_default_sizes_build_and_run(name: str) -> None:
    cond_dim = 2 if name == "mlp" else 0
    net = build_backbone(name, horizon=16, transition_dim=3, cond_dim=cond_dim)
    x, t, cond = inputs(2, 16, 3, cond_dim)
    assert net(x, t, cond).shape == (2, 16, 3)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("cond_dim", [0, 3])
def test_gradient_reaches_every_parameter(name: str, cond_dim: int) -> None:
    torch.manual_seed(0)
    net = make(name, cond_dim=cond_dim)
    perturb_zero_init(net)
    x, t, cond = inputs(4, 8, 3, cond_dim)
    (net(x, t, cond) * torch.randn(4, 8, 3)).sum().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert dead == []


def test_dit_starts_at_zero_and_its_zero_layers_learn_first() -> None:
    torch.manual_seed(0)
    net = make("dit", cond_dim=2)
    assert isinstance(net, DiT1d)
    x, t, cond = inputs(4, 8, 3, 2)
    out = net(x, t, cond)
    assert torch.equal(out, torch.zeros_like(out))
    (out * torch.randn_like(out)).sum().backward()
    # Only the output layer sees a gradient at first (everything else sits behind its zeros).
    assert net.final.weight.grad is not None and net.final.weight.grad.any()
    assert net.final.bias.grad is not None and net.final.bias.grad.any()
    # Once the output layer moves, gradient reaches the zero-initialised modulations too.
    net.zero_grad()
    with torch.no_grad():
        net.final.weight.normal_(std=0.1)
    (net(x, t, cond) * torch.randn(4, 8, 3)).sum().backward()
    for layer in [net.final_modulation, *(b.modulation for b in net.blocks)]:
        assert layer.weight.grad is not None and layer.weight.grad.any()


@pytest.mark.parametrize("name", NAMES)
def test_output_depends_on_t_and_cond(name: str) -> None:
    torch.manual_seed(0)
    net = make(name, cond_dim=3)
    perturb_zero_init(net)
    x, t, cond = inputs(4, 8, 3, 3)
    assert cond is not None
    base = net(x, t, cond)
    assert not torch.allclose(base, net(x, t + 7, cond))
    assert not torch.allclose(base, net(x, t.float() + 0.5, cond))
    assert not torch.allclose(base, net(x, t, cond + 1.0))
    # The same time value as long or float gives the same output.
    assert torch.allclose(base, net(x, t.float(), cond))


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_manual_seed(name: str) -> None:
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        net = make(name, cond_dim=2)
        x, t, cond = inputs(2, 8, 3, 2)
        outs.append(net(x, t, cond))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("name", NAMES)
def test_cond_is_validated(name: str) -> None:
    x, t, _ = inputs(2, 8, 3, 0)
    unconditional, conditional = make(name), make(name, cond_dim=4)
    with pytest.raises(ValueError, match=r"unconditional.*\(2, 4\)"):
        unconditional(x, t, torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"\(2, 4\).*None"):
        conditional(x, t, None)
    with pytest.raises(ValueError, match=r"\(2, 4\).*got \(2, 5\)"):
        conditional(x, t, torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 8, 3\), got \(2, 8, 4\)"):
        unconditional(torch.randn(2, 8, 4), t)
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        unconditional(x, t[:1])


def test_unet_rejects_horizon_not_divisible_by_its_downsampling() -> None:
    with pytest.raises(ValueError, match=r"horizon 10 must be divisible by 4"):
        TemporalUNet(horizon=10, transition_dim=3, dim_mults=(1, 2, 4))
    TemporalUNet(horizon=12, transition_dim=3, dim_mults=(1, 2, 4))
    with pytest.raises(ValueError, match="n_groups"):
        TemporalUNet(horizon=8, transition_dim=3, dim=12)


def test_unet_widths_are_not_cumulative() -> None:
    net = TemporalUNet(horizon=16, transition_dim=3, dim=32, dim_mults=(1, 2, 4))
    widths = [level[1].block2.conv.out_channels for level in net.down_blocks]
    assert widths == [32, 64, 128]


def test_build_backbone_names_bad_name_and_keyword() -> None:
    with pytest.raises(ValueError, match=r"'transformer'.*unet.*dit.*mlp"):
        build_backbone("transformer", horizon=8, transition_dim=3, cond_dim=0)
    with pytest.raises(ValueError, match=r"'width'.*accepted: dim, dim_mults"):
        build_backbone("unet", horizon=8, transition_dim=3, cond_dim=0, width=64)
    net = build_backbone("dit", horizon=8, transition_dim=3, cond_dim=0, d_model=16, depth=1)
    assert isinstance(net, DiT1d) and len(net.blocks) == 1
    assert backbone_sizes("mlp")["hidden"] == 256


def test_mlp_dropout_acts_only_in_training() -> None:
    net = ResidualMLP(horizon=2, transition_dim=3, hidden=32, blocks=2, dropout=0.5)
    x, t, _ = inputs(4, 2, 3, 0)
    net.eval()
    assert torch.equal(net(x, t), net(x, t))
    net.train()
    assert not torch.equal(net(x, t), net(x, t))


def test_sinusoidal_embedding_hand_values() -> None:
    # dim 4: frequencies 1 and 10000^(-1/2) = 0.01; columns sin(t), sin(0.01 t), cos(t), ...
    emb = sinusoidal_embedding(torch.tensor([0, 1, 2]), 4)
    expected = torch.tensor(
        [
            [0.0, 0.0, 1.0, 1.0],
            [math.sin(1.0), math.sin(0.01), math.cos(1.0), math.cos(0.01)],
            [math.sin(2.0), math.sin(0.02), math.cos(2.0), math.cos(0.02)],
        ]
    )
    assert emb.dtype == torch.float32
    assert torch.allclose(emb, expected, atol=1e-6)
    odd = sinusoidal_embedding(torch.tensor([1.0, 2.0]), 5)
    assert odd.shape == (2, 5) and torch.equal(odd[:, 4], torch.zeros(2))
    assert torch.allclose(odd[:, :4], expected[1:])


def test_mlp_helper() -> None:
    net = mlp(5, 2, hidden=16, layers=2)
    assert [type(m) for m in net] == [nn.Linear, nn.Mish, nn.Linear, nn.Mish, nn.Linear]
    assert net(torch.randn(7, 5)).shape == (7, 2)
    assert len(mlp(5, 2, hidden=16, layers=0)) == 1


def test_lora_wraps_every_linear_and_conv1d() -> None:
    """peft can adapt every layer the backbones use; a missing peft fails here, never skips."""
    import peft  # in dmc-core's `test` extra; imported here so the other tests run without it

    for name in NAMES:
        net = make(name, cond_dim=2)
        targets = [n for n, m in net.named_modules() if type(m) in (nn.Linear, nn.Conv1d)]
        config = peft.LoraConfig(r=2, lora_alpha=2, target_modules=targets)
        wrapped = peft.get_peft_model(net, config)
        x, t, cond = inputs(2, 8, 3, 2)
        assert wrapped(x, t, cond).shape == (2, 8, 3)
        lora = {n.split(".lora_A")[0] for n, _ in wrapped.named_parameters() if ".lora_A" in n}
        assert len(lora) == len(targets)
