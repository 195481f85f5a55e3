"""SFT on the best samples, iterated (spec §4.3).

Every round samples `candidates` per condition from the generator (the foundation, or the model
being fine-tuned), keeps the top `keep_fraction` of each condition by r(z_0) and trains on them
with the ordinary diffusion loss for `updates_per_batch` updates. When the generator is the
fine-tuned model, a kept sample must also be likely under the foundation: its denoising loss
under the foundation (averaged over `likelihood_draws` times and noises, an ELBO surrogate) must
not exceed `likelihood_threshold`, which stops the loop from drifting off the data.

References:
    Black et al. (2023), the filtered "RWR-sparse" baseline; Huh & Mohapatra (2025), Sec. 3.3.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dmc_align.lora import reference_mode, sampling_mode
from dmc_align.methods.base import AlignContext, no_update
from dmc_core.models import ControlModel

__all__ = ["SFT", "foundation_nll", "top_per_condition"]


def top_per_condition(reward: Tensor, candidates: int, fraction: float) -> Tensor:
    """Indices of the best ceil(fraction x candidates) samples of every condition's group.

    Shapes:
        reward: (groups * candidates,), consecutive groups; returns (groups * kept,) long.
    """
    kept = max(1, math.ceil(fraction * candidates))
    grouped = reward.reshape(-1, candidates)
    best = grouped.topk(kept, dim=1).indices
    rows = torch.arange(grouped.shape[0], device=reward.device)[:, None] * candidates
    return (rows + best).reshape(-1)


def foundation_nll(
    model: ControlModel, z0: Tensor, history: Tensor, draws: int, generator: torch.Generator
) -> Tensor:
    """The foundation's denoising loss of each sample, averaged over `draws` (t, noise) draws.

    Shapes:
        z0: (B, horizon, transition_dim); returns (B,).
    """
    with reference_mode(model):
        losses = [model.denoising_loss(z0, history, generator) for _ in range(draws)]
    return torch.stack(losses).mean(dim=0)


class SFT:
    """The `sft` method (see the module docstring)."""

    def __init__(self, context: AlignContext) -> None:
        """Read the pass's `sft` knobs."""
        self.context = context
        self.spec = context.spec.sft
        self.updates_per_batch = self.spec.updates_per_batch
        self.loss_has_scale = True
        self._kept: tuple[Tensor, Tensor] | None = None

    def collect(self, history: Tensor, generator: torch.Generator) -> dict[str, float]:
        """Sample, keep the best of every condition, filter by foundation likelihood."""
        model, spec = self.context.model, self.spec
        repeated = history.repeat_interleave(spec.candidates, dim=0)
        sampler = reference_mode if spec.generator == "foundation" else sampling_mode
        with torch.no_grad(), sampler(model):
            z0 = model.sample(repeated, generator, record=False).x0
            reward = self.context.score(z0, repeated, history.shape[0])
        keep = top_per_condition(reward, spec.candidates, spec.keep_fraction)
        samples, conditions = z0[keep], repeated[keep]
        metrics = {"reward": float(reward.mean()), "kept_reward": float(reward[keep].mean())}
        if spec.generator == "current" and spec.likelihood_threshold > 0:
            nll = foundation_nll(model, samples, conditions, spec.likelihood_draws, generator)
            likely = nll <= spec.likelihood_threshold
            metrics["likelihood_kept"] = float(likely.float().mean())
            metrics["foundation_nll"] = float(nll.mean())
            samples, conditions = samples[likely], conditions[likely]
        self._kept = (samples.detach(), conditions)
        return metrics

    def loss(self, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """The diffusion loss of a random batch of the kept samples."""
        assert self._kept is not None, "collect() first"
        samples, conditions = self._kept
        if samples.shape[0] == 0:
            return no_update(self.context.model), {"kept": 0.0}
        pick = torch.randint(samples.shape[0], (self.spec.batch_size,), generator=generator)
        loss = self.context.model.denoising_loss(samples[pick], conditions[pick], generator)
        return loss.mean(), {"kept": float(samples.shape[0])}
