"""Q-value policy gradient: the critic's value back-propagated through the chain (spec §4.1b).

Samples are drawn with the reparameterised sampler (z_{t-1} = mean(z_t) + std * noise), with
gradients through the last K denoising steps only (DRaFT-K / AlignProp truncation; the earlier
steps run without gradients). The loss is Diffusion-QL's scale-free actor loss,
-mean r(z_0) / sg(mean |r(z_0)|), plus a small behaviour-cloning term (the diffusion loss on
dataset windows) that keeps samples where the critic is trustworthy, plus optionally the
per-step KL to the reference model over the differentiable steps. The credit weight kappa_t
scales the gradient that flows through step t's network output.

References:
    Clark et al., "Directly Fine-Tuning Diffusion Models on Differentiable Rewards" (DRaFT,
    2023); Wang et al., "Diffusion Policies as an Expressive Policy Class for Offline RL"
    (Diffusion-QL, 2023), Eq. 3.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from dmc_align.credit import credit_weights
from dmc_align.divergence import gaussian_kl
from dmc_align.lora import reference_mode
from dmc_align.methods.base import AlignContext
from dmc_core.diffusion import SampleResult
from dmc_core.models.windows import window_to

__all__ = ["QVPG", "CreditScaledDenoiser", "q_policy_loss"]


def q_policy_loss(reward: Tensor) -> Tensor:
    """-mean(r) / sg(mean |r|): the gradient of mean r, made independent of the reward scale.

    Shapes:
        reward: (B,); returns a scalar.
    """
    return -reward.mean() / reward.detach().abs().mean().clamp(min=1e-6)


class CreditScaledDenoiser(nn.Module):
    """A denoiser whose output gradient at the i-th call is scaled by `weights[i]` (per sample).

    The weights are looked up when the gradient arrives, so they may be filled in after the
    chain has been sampled (the retrospective direction weights need the finished chain).
    """

    def __init__(self, net: nn.Module) -> None:
        """Wrap `net`; `weights` maps call index -> (B,) weights (missing: 1)."""
        super().__init__()
        self.net = net
        self.weights: dict[int, Tensor] = {}
        self.calls = 0

    def forward(self, z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        """Call the network; hook its output's gradient if it has one."""
        out: Tensor = self.net(z_t, t, cond)
        index = self.calls
        self.calls += 1
        if out.requires_grad:
            out.register_hook(lambda grad: self._scale(grad, index))
        return out

    def _scale(self, grad: Tensor, index: int) -> Tensor:
        weight = self.weights.get(index)
        if weight is None:
            return grad
        return grad * weight.reshape(-1, *([1] * (grad.ndim - 1)))


class QVPG:
    """The `qvpg` method (see the module docstring)."""

    updates_per_batch = 1
    loss_has_scale = True

    def __init__(self, context: AlignContext) -> None:
        """Read the pass's `qvpg` knobs."""
        self.context = context
        self.spec = context.spec.qvpg
        self._history: Tensor | None = None

    def collect(self, history: Tensor, generator: torch.Generator) -> dict[str, float]:
        """Keep the conditions: the samples are drawn, with gradients, in `loss`."""
        self._history = history
        return {}

    def sample(self, history: Tensor, generator: torch.Generator) -> SampleResult:
        """Reparameterised samples, gradients through the last K steps weighted by kappa."""
        model, spec = self.context.model, self.spec
        cond, inpaint = model.condition(history)
        denoiser = CreditScaledDenoiser(model.net)
        shape = (history.shape[0], model.horizon, model.transition_dim)
        result = model.formulation.sample(
            denoiser,
            shape,
            cond,
            generator,
            inpaint=inpaint,
            grad_last_k=spec.last_steps,
            clip_x0=model.clip_x0,
        )
        trained = min(spec.last_steps, len(result.steps))
        kappa = credit_weights(spec.credit, result.steps, trained)
        first = len(result.steps) - trained
        denoiser.weights = {first + k: kappa[k] for k in range(trained)}
        return result

    def loss(self, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """-Q (scale-free) + bc_weight x diffusion loss (+ kl_weight x path KL)."""
        assert self._history is not None, "collect() first"
        model, spec = self.context.model, self.spec
        history = self._history.repeat_interleave(spec.candidates, dim=0)
        result = self.sample(history, generator)
        reward = self.context.score(result.x0, history, self._history.shape[0])
        loss = q_policy_loss(reward)
        metrics = {"reward": float(reward.detach().mean())}
        if spec.bc_weight > 0:
            window = self.context.windows.sample(history.shape[0], generator)
            device = next(model.parameters()).device
            bc = model.training_loss(window_to(window, device), generator)
            loss = loss + spec.bc_weight * bc
            metrics["bc_loss"] = float(bc.detach())
        if spec.divergence == "kl":
            kl = self._path_kl(history, result)
            loss = loss + spec.kl_weight * kl
            metrics["kl"] = float(kl.detach())
        return loss, metrics

    def _path_kl(self, history: Tensor, result: SampleResult) -> Tensor:
        """Mean over the differentiable steps of KL(p_theta(.|z_t) || p_ref(.|z_t))."""
        model = self.context.model
        trained = min(self.spec.last_steps, len(result.steps))
        first = len(result.steps) - trained
        terms = []
        for index in range(first, len(result.steps)):
            z_t = result.steps[index].z_t.detach()
            mean, std, free = model.step_gaussian(history, index, z_t)
            with reference_mode(model):
                ref_mean, _, _ = model.step_gaussian(history, index, z_t)
            std = max(std, 1e-3)
            terms.append(gaussian_kl(mean, std, ref_mean, std, free).mean())
        return torch.stack(terms).mean()
