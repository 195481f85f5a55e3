"""RL over the denoising MDP: REINFORCE with PPO ratio clipping (DDPO / DPPO, spec §4.1a).

Each condition gets `candidates` chains sampled with a std floor, so that every step is a
Gaussian with a finite log-probability; r(z_0) standardised within the condition is the
advantage of every step of its chain. Only the last `last_steps` steps are trained (DPPO's K').
The loss per (sample, step) is PPO's clipped surrogate on the ratio of the step's
log-probability (summed over dimensions: control samples have tens of dimensions, not tens of
thousands, so the sum is numerically safe and a usual clip range applies), weighted by kappa.
Divergence control is the clipping, or a closed-form per-step KL to the reference model.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dmc_align.credit import credit_weights
from dmc_align.divergence import gaussian_kl
from dmc_align.lora import reference_mode, sampling_mode
from dmc_align.methods.base import AlignContext, standardise_per_condition
from dmc_core.diffusion import StepRecord, gaussian_log_prob

__all__ = ["PPO", "ppo_surrogate"]


def ppo_surrogate(
    log_prob: Tensor, old_log_prob: Tensor, advantages: Tensor, clip: float | None
) -> Tensor:
    """Per-sample PPO loss max(-A rho, -A clip(rho, 1 - eps, 1 + eps)); plain -A rho if no clip.

    Shapes:
        all (B,); returns (B,).

    References:
        Schulman et al., "Proximal Policy Optimization Algorithms" (2017), Eq. 7.
    """
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantages * ratio
    if clip is None:
        return unclipped
    return torch.maximum(unclipped, -advantages * ratio.clamp(1.0 - clip, 1.0 + clip))


class PPO:
    """The `ppo` method (see the module docstring)."""

    def __init__(self, context: AlignContext) -> None:
        """Read the pass's `ppo` knobs."""
        self.context = context
        self.spec = context.spec.ppo
        self.updates_per_batch = self.spec.updates_per_batch
        # The clipped surrogate with standardised advantages is zero at every fresh batch.
        self.loss_has_scale = False
        self._history: Tensor | None = None
        self._steps: tuple[StepRecord, ...] = ()
        self._advantages = torch.zeros(0)
        self._kappa = torch.zeros(0)

    def collect(self, history: Tensor, generator: torch.Generator) -> dict[str, float]:
        """Sample `candidates` chains per condition and compute their advantages."""
        model, spec = self.context.model, self.spec
        repeated = history.repeat_interleave(spec.candidates, dim=0)
        with sampling_mode(model):
            result = model.sample(repeated, generator, std_floor=spec.std_floor, record=True)
            reward = self.context.score(result.x0, repeated, history.shape[0])
        trained = min(spec.last_steps, len(result.steps))
        self._history = repeated
        self._steps = result.steps[len(result.steps) - trained :]
        self._advantages = standardise_per_condition(
            reward, spec.candidates, spec.advantage_std_floor, spec.advantage_clip
        )
        self._kappa = credit_weights(spec.credit, result.steps, trained)
        return {"reward": float(reward.mean()), "reward_std": float(reward.std())}

    def loss(self, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """The kappa-weighted surrogate over the trained steps (+ the KL term)."""
        assert self._history is not None, "collect() first"
        model, spec = self.context.model, self.spec
        first = model.formulation.num_steps - len(self._steps)
        clip = spec.clip if spec.divergence == "clip" else None
        surrogate, kl, clipped = [], [], []
        for offset, step in enumerate(self._steps):
            index = first + offset
            mean, std, free = model.step_gaussian(self._history, index, step.z_t)
            std = max(std, spec.std_floor)
            log_prob = gaussian_log_prob(step.z_prev, mean, std, free=free)
            per_sample = ppo_surrogate(log_prob, step.log_prob, self._advantages, clip)
            surrogate.append(self._kappa[offset] * per_sample)
            ratio = torch.exp(log_prob - step.log_prob).detach()
            clipped.append(((ratio - 1.0).abs() > spec.clip).float().mean())
            if spec.divergence == "kl":
                with reference_mode(model):
                    ref_mean, ref_std, _ = model.step_gaussian(self._history, index, step.z_t)
                kl.append(gaussian_kl(mean, std, ref_mean, max(ref_std, spec.std_floor), free))
        loss = torch.stack(surrogate).mean()
        metrics = {"clip_fraction": float(torch.stack(clipped).mean())}
        if kl:
            kl_mean = torch.stack(kl).mean()
            loss = loss + spec.kl_weight * kl_mean
            metrics["kl"] = float(kl_mean)
        return loss, metrics
