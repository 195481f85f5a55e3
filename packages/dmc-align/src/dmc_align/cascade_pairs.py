"""Training pairs of a cascade (spec §4.4): `(x_cond, x_r)` with `r(x_cond) < r(x_r)`.

Both samples of a pair come from the model the cascade will refine, for the same observation
history, and are made consistent in one of the two ways of the paper (§3.4):

- `inpaint`: they share the in-painted part: the same current state `s_0` for a planner (the
  same observation history for a policy) is fixed in every candidate. A longer shared prefix
  would share the first action too, and with it the reward r = Q(s, a_0), so it is not used.
- `shared_latent`: the reverse chain runs once from z_T to z_t (a fraction of the way), and the
  candidates are denoised from that same z_t to their own z_0.

Per history, `candidates` samples are drawn and scored by r; the best is the target `x_r` of
every other candidate that is strictly worse. Candidates whose reward ties the best are dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from dmc_core.models import ControlModel

__all__ = ["PAIR_MODES", "CascadePairs", "branch_index", "denoise", "make_pairs"]

PAIR_MODES = ("inpaint", "shared_latent")

Reward = Callable[[ControlModel, Tensor, Tensor], Tensor]
"""r(z_0) of samples given their histories: (model, z0 (B, H, D), history (B, To, obs)) -> (B,)."""


@dataclass(frozen=True)
class CascadePairs:
    """Pairs of samples of one model, the better one last.

    `latent` is the shared z_t of each pair (shared_latent), or None.

    Shapes:
        history: (N, To, obs_dim) raw; x_cond, x_r: (N, H, D) normalised; r_cond, r_r: (N,);
        latent: (N, H, D).
    """

    history: Tensor
    x_cond: Tensor
    x_r: Tensor
    r_cond: Tensor
    r_r: Tensor
    latent: Tensor | None = None

    def __len__(self) -> int:
        """Number of pairs."""
        return int(self.x_cond.shape[0])

    @property
    def gap(self) -> float:
        """Mean reward improvement r(x_r) - r(x_cond)."""
        return float((self.r_r - self.r_cond).mean()) if len(self) else 0.0

    @staticmethod
    def cat(parts: list[CascadePairs]) -> CascadePairs:
        """Concatenate pair sets."""
        latent = None if parts[0].latent is None else torch.cat([p.latent for p in parts])
        return CascadePairs(
            *(torch.cat([getattr(p, k) for p in parts]) for k in CascadePairs._TENSORS),
            latent=latent,
        )

    _TENSORS = ("history", "x_cond", "x_r", "r_cond", "r_r")


def branch_index(model: ControlModel, fraction: float) -> int:
    """The reverse step at which shared_latent branches: `fraction` of the chain, at least one
    step taken and at least one left."""
    steps = model.formulation.num_steps
    return min(max(1, round(fraction * steps)), steps - 1) if steps > 1 else 0


@torch.no_grad()
def denoise(
    model: ControlModel,
    history: Tensor,
    z: Tensor,
    start: int,
    stop: int,
    generator: torch.Generator,
) -> Tensor:
    """Run reverse steps `start .. stop - 1` (0 = noisiest) from `z`, with the model's
    in-painting, as the sampler does.

    Shapes:
        history: (B, To, obs_dim); z, returns: (B, H, D).
    """
    _, inpaint = model.condition(history)
    if inpaint is not None:
        z = torch.where(inpaint[0], inpaint[1], z)
    for index in range(start, stop):
        mean, std, _ = model.step_gaussian(history, index, z)
        if std > 0.0:
            noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
            z = mean + std * noise
        else:
            z = mean
        if inpaint is not None:
            z = torch.where(inpaint[0], inpaint[1], z)
    return z


@torch.no_grad()
def make_pairs(
    model: ControlModel,
    reward: Reward,
    histories: Tensor,
    candidates: int,
    mode: str,
    generator: torch.Generator,
    branch_fraction: float = 0.5,
) -> CascadePairs:
    """Pairs of `model`'s samples for each history (see the module docstring).

    Shapes:
        histories: (M, To, obs_dim); returns at most M * (candidates - 1) pairs.
    """
    if mode not in PAIR_MODES:
        raise ValueError(f"unknown pair mode {mode!r} (modes: {PAIR_MODES})")
    if candidates < 2:
        raise ValueError(f"pairs need at least 2 candidates per history, got {candidates}")
    groups = histories.shape[0]
    repeated = histories.repeat_interleave(candidates, dim=0)
    shape = (groups, model.horizon, model.transition_dim)
    latent = None
    if mode == "inpaint":
        z0 = model.sample(repeated, generator, record=False).x0
    else:
        steps = model.formulation.num_steps
        branch = branch_index(model, branch_fraction)
        z_T = torch.randn(shape, generator=generator, device=histories.device)
        z_t = denoise(model, histories, z_T, 0, branch, generator)
        latent = z_t.repeat_interleave(candidates, dim=0)
        z0 = denoise(model, repeated, latent, branch, steps, generator)
    rewards = reward(model, z0, repeated).reshape(groups, candidates)
    z0 = z0.reshape(groups, candidates, *z0.shape[1:])
    best = rewards.argmax(dim=1)
    best_reward = rewards.gather(1, best[:, None])
    worse = rewards < best_reward  # strictly: ties (and the best itself) are dropped
    group, member = worse.nonzero(as_tuple=True)
    target = best[group]
    pairs = CascadePairs(
        history=histories[group],
        x_cond=z0[group, member],
        x_r=z0[group, target],
        r_cond=rewards[group, member],
        r_r=rewards[group, target],
        latent=None
        if latent is None
        else latent.reshape(groups, candidates, *shape[1:])[group, member],
    )
    return pairs
