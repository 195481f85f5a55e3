"""In-painting masks along time: which entries of a trajectory are given rather than generated.

A planner's sample is a trajectory (B, H, D) whose first `state_dim` channels at each step are
the state (Diffuser also holds the action after it). Conditioning on the present means fixing
the start state; conditioning on a known prefix of k steps (RePaint-style causal masks) means
fixing the states of steps 0..k-1 and the actions of steps 0..k-2, i.e. everything that has
already happened. Training on random prefixes teaches the model the in-painting task it is
asked to solve at sampling time.

References:
    Janner et al., "Planning with Diffusion for Flexible Behavior Synthesis" (2022), Sec. 3.2;
    Lugmayr et al., "RePaint" (2022); Huh & Mohapatra, "Maximize Your Diffusion" (2025), Sec. 3.6.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["INPAINTING_MODES", "prefix_mask", "training_mask"]

#: How a planner is trained to in-paint: not at all, the start state, or a random causal prefix.
INPAINTING_MODES = ("none", "first_state", "causal_prefix")


def prefix_mask(prefix: Tensor, horizon: int, state_dim: int, dim: int) -> Tensor:
    """The known entries of trajectories whose first `prefix[b]` steps have happened.

    Shapes:
        prefix: (B,) long, in 1..horizon.
        returns: (B, horizon, dim) bool; True = known (states of steps < prefix, actions of
            steps < prefix - 1).
    """
    steps = torch.arange(horizon, device=prefix.device)[None, :]
    state_known = steps < prefix[:, None]
    action_known = steps < prefix[:, None] - 1
    channel_is_state = torch.arange(dim, device=prefix.device) < state_dim
    return torch.where(channel_is_state, state_known[..., None], action_known[..., None])


def training_mask(
    mode: str,
    batch: int,
    horizon: int,
    state_dim: int,
    dim: int,
    generator: torch.Generator,
    max_prefix: int | None = None,
) -> Tensor | None:
    """The in-painting mask of a training batch for `mode` (see `INPAINTING_MODES`).

    `causal_prefix` draws the prefix length uniformly in 1..max_prefix (default: half the
    horizon, so that at least half of every window is always generated).

    Shapes:
        returns: (B, horizon, dim) bool, or None for mode `none`.
    """
    if mode == "none":
        return None
    if mode == "first_state":
        prefix = torch.ones(batch, dtype=torch.long)
    elif mode == "causal_prefix":
        top = max_prefix if max_prefix is not None else max(1, horizon // 2)
        prefix = torch.randint(1, top + 1, (batch,), generator=generator)
    else:
        raise ValueError(f"unknown in-painting mode {mode!r}; known: {list(INPAINTING_MODES)}")
    return prefix_mask(prefix, horizon, state_dim, dim)
