"""Bottleneck diffusion model (BDM): a diffusion policy whose noise predictor is the action
gradient of a scalar network, so that the network is a log-density (EDA's behaviour model)."""

from __future__ import annotations

import torch
from torch import Tensor

from dmc_core.diffusion.formulation import Formulation
from dmc_core.diffusion.sm import SM, TIME_SCALE
from dmc_core.models.diffusion_policy import DiffusionPolicy
from dmc_core.models.normalizer import RangeNormalizer
from dmc_core.models.spec import EPS_FORMULATIONS, ModelSpec
from dmc_core.nets.energy import EnergyDenoiser, NoiseStd

__all__ = ["BottleneckDiffusionModel", "network_noise_std"]


def network_noise_std(formulation: Formulation) -> NoiseStd:
    """The map from the formulation's denoiser time input to sigma_t (see `Denoiser`).

    DDPM/DDIM: sigma_t = sqrt(1 - abar_t) at integer steps t; SM: sigma(t) at t = input / 1000.

    Raises:
        ValueError: the formulation does not predict eps (FM regresses a velocity).
    """
    if isinstance(formulation, SM):
        return lambda t: formulation.marginal(t.to(torch.float64) / TIME_SCALE)[1]
    if formulation.name not in EPS_FORMULATIONS:
        raise ValueError(f"a BDM needs an eps-predicting formulation, not {formulation.name!r}")
    table = formulation.schedule.sqrt_one_minus_alphas_cumprod  # type: ignore[attr-defined]
    return lambda t: table[t.long().cpu() - 1].to(t.device)


class BottleneckDiffusionModel(DiffusionPolicy):
    """A Diffusion Policy with eps(a_t | s, t) = -sigma_t * grad_{a_t} f(a_t | s, t).

    Everything but the network is the Diffusion Policy's: the sample is the normalised action
    chunk, the condition the flattened observation history, the loss the eps-MSE (through the
    gradient, so training back-propagates through a second derivative). The network is an
    `EnergyDenoiser` around the spec's backbone; `energy` and `log_density` expose f, the
    log-density of the (noised) action chunk up to a constant per state and time.

    References:
        Chen et al., "Aligning Diffusion Behaviors with Q-functions for Efficient Continuous
        Control" (NeurIPS 2024), Sec. 3.1, Eq. 9.
    """

    kind = "bdm"
    role = "policy"

    def __init__(
        self,
        spec: ModelSpec,
        obs_normalizer: RangeNormalizer,
        act_normalizer: RangeNormalizer,
    ) -> None:
        """Build the backbone as a Diffusion Policy would, and make it the energy's body."""
        super().__init__(spec, obs_normalizer, act_normalizer)
        self.net = EnergyDenoiser(self.net, network_noise_std(self.formulation))

    def energy(self, z_t: Tensor, history: Tensor, t: Tensor) -> Tensor:
        """f(z_t | s, t) of noised, normalised action chunks (differentiable in the weights).

        Equal to log p_t(z_t | s) + C(s, t) at the optimum; only differences between chunks of
        the same state and time are meaningful. Under LoRA's reference mode this is the frozen
        behaviour model's f_phi.

        Shapes:
            z_t: (B, horizon, act_dim) normalised; history: (B, To, obs_dim);
            t: (B,) in the formulation's units (integer steps, or SM times in (0, 1]).
            returns: (B,).
        """
        self._check_history(history)
        cond, _ = self.condition(history)
        # Through `self.net`, so that adapters wrapped around the energy network (LoRA) apply.
        return self.net.energy(z_t, self.formulation.network_time(t), cond)  # type: ignore[operator]

    def log_density(self, history: Tensor, actions: Tensor, t: Tensor | None = None) -> Tensor:
        """The log-density of raw action chunks given their states, up to a per-state constant.

        f evaluated at the chunk itself (normalised) at time `t`, by default the smallest time
        of the formulation (step 1, or SM's t_eps), where the noised density is closest to the
        data's: log pi(a | s) + C(s). Compare values of one state only (likelihood filters,
        coherency of a policy's samples).

        Shapes:
            history: (B, To, obs_dim); actions: (B, horizon, act_dim) raw units;
            t: (B,) in the formulation's units, or None. returns: (B,).
        """
        if t is None:
            t = self.smallest_time(actions.shape[0], actions.device)
        return self.energy(self.act_normalizer.normalize(actions), history, t)

    def smallest_time(self, batch: int, device: torch.device | str) -> Tensor:
        """The least noisy training time, (batch,), in the formulation's units."""
        if isinstance(self.formulation, SM):
            return torch.full((batch,), self.formulation.t_eps, device=device)
        return torch.ones(batch, dtype=torch.long, device=device)
