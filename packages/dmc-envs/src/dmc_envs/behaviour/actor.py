"""The behaviour agents' actor: a tanh-squashed Gaussian MLP policy, in plain torch.

The trainer (`dmc_envs.behaviour.sac`) learns it with stable-baselines3's SAC; what it hands to
every other stage is this module's weights (safetensors) and a YAML sidecar with its shape and
provenance (`dmc_core.checkpoint`). Nothing here imports stable-baselines3 or unpickles
anything, so the datasets stage and the evaluation read the agents without the trainer.

The policy, as SAC defines it: u ~ N(mu(s), sigma(s)^2) with log sigma clamped to
[log_std_min, log_std_max], a = tanh(u), then mapped affinely from [-1, 1] onto the action box.
Its density is the Gaussian's divided by the Jacobian of the squashing:
    p(a | s) = N(u; mu, sigma) / prod_i (1 - tanh(u_i)^2) * prod_i 2 / (high_i - low_i).

References:
    Haarnoja et al., "Soft Actor-Critic" (2018), Appendix C (the squashed Gaussian and its
    log-likelihood); stable-baselines3's SAC `Actor` (the same layers: `latent_pi`, `mu`,
    `log_std`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dmc_core.checkpoint import load_checkpoint, save_checkpoint
from dmc_core.errors import CheckpointError

__all__ = ["ACTOR_KIND", "ActorDensity", "ActorShape", "SquashedGaussianActor", "load_actor"]

#: The `kind` an actor's sidecar records.
ACTOR_KIND = "squashed_gaussian_mlp"

# Keeps atanh finite for actions on the box's faces (a clipped or rounded sample).
_EDGE = 1e-6


@dataclass(frozen=True)
class ActorShape:
    """What rebuilds an actor: sizes, hidden layers, the log-std clamp and the action box."""

    obs_dim: int
    act_dim: int
    hidden: tuple[int, ...]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    kind: str = field(default=ACTOR_KIND)

    def to_dict(self) -> dict[str, Any]:
        """The sidecar's `config` (YAML-ready)."""
        plain = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in plain.items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str) -> ActorShape:
        """The shape a sidecar records, or `CheckpointError` naming the file."""
        if values.get("kind") != ACTOR_KIND:
            raise CheckpointError(f"{source}: not a behaviour actor (kind {values.get('kind')!r})")
        try:
            return cls(
                obs_dim=int(values["obs_dim"]),
                act_dim=int(values["act_dim"]),
                hidden=tuple(int(h) for h in values["hidden"]),
                action_low=tuple(float(v) for v in values["action_low"]),
                action_high=tuple(float(v) for v in values["action_high"]),
                log_std_min=float(values["log_std_min"]),
                log_std_max=float(values["log_std_max"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{source}: incomplete actor spec ({err!r})") from None


class SquashedGaussianActor(nn.Module):
    """SAC's actor (see the module docstring). Layer names follow stable-baselines3's, so its
    `actor.state_dict()` loads here as it is."""

    def __init__(self, shape: ActorShape) -> None:
        """Build the layers for `shape` (weights are loaded afterwards)."""
        super().__init__()
        self.shape = shape
        layers: list[nn.Module] = []
        width = shape.obs_dim
        for hidden in shape.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.latent_pi = nn.Sequential(*layers)
        self.mu = nn.Linear(width, shape.act_dim)
        self.log_std = nn.Linear(width, shape.act_dim)
        low = torch.tensor(shape.action_low, dtype=torch.float32)
        high = torch.tensor(shape.action_high, dtype=torch.float32)
        self.register_buffer("centre", (high + low) / 2, persistent=False)
        self.register_buffer("half_width", (high - low) / 2, persistent=False)

    def gaussian(self, observations: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and clamped log-std of the pre-squash Gaussian. Shapes: (N, obs) -> (N, act) x2."""
        latent = self.latent_pi(observations)
        log_std = self.log_std(latent).clamp(self.shape.log_std_min, self.shape.log_std_max)
        return self.mu(latent), log_std

    def act(
        self, observations: Tensor, generator: torch.Generator | None, deterministic: bool = False
    ) -> Tensor:
        """Actions in the box: tanh of a Gaussian sample (or of the mean). Shapes: (N, obs) ->
        (N, act)."""
        mean, log_std = self.gaussian(observations)
        if deterministic:
            pre = mean
        else:
            noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
            pre = mean + log_std.exp() * noise
        return self.centre + self.half_width * torch.tanh(pre)

    def log_density(self, observations: Tensor, actions: Tensor) -> Tensor:
        """log p(a | s) of actions in the box (see the module docstring). Shapes: (N, obs),
        (N, act) -> (N,)."""
        squashed = ((actions - self.centre) / self.half_width).clamp(-1 + _EDGE, 1 - _EDGE)
        pre = torch.atanh(squashed)
        mean, log_std = self.gaussian(observations)
        z = (pre - mean) / log_std.exp()
        gaussian = -0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)
        jacobian = torch.log1p(-(squashed**2)) + torch.log(self.half_width)
        return (gaussian - jacobian).sum(dim=-1)


def save_actor(
    path: str | os.PathLike[str], actor: SquashedGaussianActor, metadata: Mapping[str, Any]
) -> None:
    """Write the actor's weights and its sidecar (shape + `metadata`: agent, step, returns)."""
    save_checkpoint(path, actor.state_dict(), actor.shape.to_dict(), metadata)


def load_actor(path: str | os.PathLike[str]) -> tuple[SquashedGaussianActor, dict[str, Any]]:
    """The actor saved at `path` (in eval mode) and its sidecar's metadata."""
    checkpoint = load_checkpoint(path)
    actor = SquashedGaussianActor(ActorShape.from_dict(checkpoint.config, str(path)))
    try:
        actor.load_state_dict(checkpoint.tensors)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the recorded actor ({err})") from None
    return actor.eval(), checkpoint.metadata


class ActorDensity:
    """A behaviour actor's density p(a | s) (policy coherency, paper Eq. 16), or a mixture of
    several actors' (a dataset stitched from their data, weighted by their shares)."""

    def __init__(self, actors: Sequence[SquashedGaussianActor], weights: Sequence[float]) -> None:
        """Keep the actors and their mixture weights (normalised to sum to 1)."""
        total = float(sum(weights))
        self.actors = list(actors)
        self.weights = [float(w) / total for w in weights]

    @torch.no_grad()
    def density(self, observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Shapes: observations (N, obs_dim), actions (N, act_dim) -> (N,)."""
        obs = torch.as_tensor(np.asarray(observations), dtype=torch.float32)
        act = torch.as_tensor(np.asarray(actions), dtype=torch.float32)
        logs = torch.stack([a.log_density(obs, act).double() for a in self.actors])
        log_weights = torch.log(torch.tensor(self.weights, dtype=torch.float64))[:, None]
        return torch.logsumexp(logs + log_weights, dim=0).exp().numpy()
