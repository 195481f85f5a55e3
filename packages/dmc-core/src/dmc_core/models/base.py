"""The shared shape of a diffusion model for control: a backbone, a formulation, normalisers.

A `ControlModel` generates `z_0` (a plan or an action chunk) in normalised units with its
formulation's sampler, conditioned on the recent observations, and decodes the actions to take.
Subclasses (one file each) say what `z_0` is, how it is conditioned and how it is learned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from dmc_core.diffusion import SampleResult, build_formulation
from dmc_core.diffusion.formulation import Formulation
from dmc_core.models.inpainting import prefix_mask
from dmc_core.models.normalizer import RangeNormalizer
from dmc_core.models.spec import ModelSpec
from dmc_core.models.windows import Window
from dmc_core.nets import build_backbone, fourier_features

__all__ = ["Conditioning", "ControlModel", "scored_actions"]

Conditioning = tuple[Tensor | None, tuple[Tensor, Tensor] | None]
"""(condition input of the network, in-painting (mask, values)); either may be None."""


def make_formulation(spec: ModelSpec) -> Formulation:
    """The formulation a model spec names."""
    f = spec.formulation
    return build_formulation(
        f.name,
        num_steps=f.steps,
        schedule=f.schedule,
        sample_steps=f.sample_steps or None,
        eta=f.eta,
        sampler=f.sampler,
    )


class ControlModel(nn.Module):
    """Base of Diffuser, Decision Diffuser and Diffusion Policy (see the module docstring).

    Shapes:
        history (every method): (B, To, obs_dim) raw observations, the newest last.
        z_0: (B, horizon, transition_dim) normalised.
    """

    kind: ClassVar[str]
    role: ClassVar[str]  # "planner" or "policy"

    def __init__(
        self,
        spec: ModelSpec,
        obs_normalizer: RangeNormalizer,
        act_normalizer: RangeNormalizer,
    ) -> None:
        """Build the backbone for this model's sample shape and condition width."""
        super().__init__()
        self.spec = spec
        self.obs_dim = obs_normalizer.dim
        self.act_dim = act_normalizer.dim
        self.obs_normalizer = obs_normalizer
        self.act_normalizer = act_normalizer
        self.formulation = make_formulation(spec)
        sizes = {k: _plain(v) for k, v in spec.backbone.items() if k != "name"}
        self.net = build_backbone(
            spec.backbone["name"],
            horizon=spec.horizon,
            transition_dim=self.transition_dim,
            cond_dim=self.cond_dim,
            **sizes,
        )

    # What a subclass defines -----------------------------------------------------------

    @property
    def transition_dim(self) -> int:
        """Channels of one step of `z_0`."""
        raise NotImplementedError

    @property
    def cond_dim(self) -> int:
        """Width of the network's condition input (0: unconditional network). Planners have
        one only with `film_observation`: their current observation's features."""
        return self.condition_width(1) if self.spec.film_observation else 0

    def training_loss(self, window: Window, generator: torch.Generator) -> Tensor:
        """The scalar loss of one batch of windows."""
        raise NotImplementedError

    def condition(self, history: Tensor) -> Conditioning:
        """The network condition and the in-painting of a batch of observation histories."""
        raise NotImplementedError

    def decode_actions(self, z0: Tensor) -> Tensor:
        """The `action_exec` actions to execute, raw units, differentiable in `z0`.

        Shapes:
            z0: (B, horizon, transition_dim); returns (B, action_exec, act_dim).
        """
        raise NotImplementedError

    def loss_weights(self, like: Tensor) -> Tensor | None:
        """Element weights of the diffusion loss, (horizon, transition_dim) on `like`'s device
        and dtype, or None (all 1).

        Training and every loss alignment takes (`denoising_loss`) use the same weights, so
        that fine-tuning values the entries of a sample as pre-training did.
        """
        return None

    # Shared behaviour ---------------------------------------------------------------------

    @property
    def horizon(self) -> int:
        """Steps of `z_0` (plan length or action-chunk length)."""
        return self.spec.horizon

    @property
    def history_len(self) -> int:
        """Observations the model conditions on (To)."""
        return self.spec.history

    def forward(self, window: Window, generator: torch.Generator) -> Tensor:
        """The training loss (so that DDP wraps the whole model; see `training_loss`)."""
        return self.training_loss(window, generator)

    @property
    def clip_x0(self) -> float | None:
        """The spec's clamp of the predicted x0 at every reverse step (None: off)."""
        return self.spec.formulation.clip_x0 or None

    def sample(
        self, history: Tensor, generator: torch.Generator, **sampler_options: Any
    ) -> SampleResult:
        """Sample one `z_0` per history with the formulation's sampler.

        `sampler_options` go to the formulation's `sample` (grad_last_k, std_floor, record,
        clip_x0); the model supplies the shape, the condition and the in-painting.
        """
        self._check_history(history)
        cond, inpaint = self.condition(history)
        shape = (history.shape[0], self.horizon, self.transition_dim)
        sampler_options.setdefault("clip_x0", self.clip_x0)
        return self.formulation.sample(
            self.net, shape, cond, generator, inpaint=inpaint, **sampler_options
        )

    def denoising_loss(
        self,
        z0: Tensor,
        history: Tensor,
        generator: torch.Generator | None = None,
        *,
        t: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Per-sample diffusion loss of given samples `z_0` under their histories' conditioning.

        The conditioning is the one sampling uses (`condition`): the network's condition input,
        and for planners the in-painted current state, which is fixed in z_t and left out of the
        loss. It is the loss alignment trains on (SFT), compares between two networks at a shared
        `t` and `noise` (Diffusion-DPO), and averages over times as a likelihood estimate (an
        ELBO surrogate: a lower loss means a likelier sample).

        Shapes:
            z0: (B, horizon, transition_dim) normalised; history: (B, To, obs_dim).
            t: (B,) in the formulation's units; noise: z0's shape. returns: (B,).
        """
        self._check_history(history)
        cond, inpaint = self.condition(history)
        mask = None if inpaint is None else inpaint[0]
        weights = self.loss_weights(z0)
        return self.formulation.loss(self.net, z0, cond, generator, mask, weights, t=t, noise=noise)

    def step_gaussian(
        self, history: Tensor, index: int, z_t: Tensor
    ) -> tuple[Tensor, float, Tensor | None]:
        """Mean, std and free entries of reverse step `index` (0 = noisiest) from `z_t`.

        What the sampler draws `z_{t-1}` from at that step, under the network as it is now:
        policy-gradient alignment re-scores recorded steps with it. `free` is False on the
        in-painted entries (they carry no density), None when nothing is in-painted.

        Shapes:
            history: (B, To, obs_dim); z_t, mean: (B, horizon, transition_dim).
        """
        cond, inpaint = self.condition(history)
        mean, std = self.formulation.step_gaussian(self.net, index, z_t, cond, clip_x0=self.clip_x0)
        return mean, std, None if inpaint is None else ~inpaint[0]

    @torch.no_grad()
    def act(self, history: Tensor, generator: torch.Generator) -> Tensor:
        """Sample and decode the actions to execute (no gradients, no records).

        Shapes:
            history: (B, To, obs_dim); returns (B, action_exec, act_dim).
        """
        result = self.sample(history, generator, record=False)
        return self.decode_actions(result.x0)

    def describe(self) -> dict[str, Any]:
        """Everything needed to rebuild this model around a state dict (checkpoint sidecar)."""
        from dmc_core.config import to_plain

        return {
            "kind": self.kind,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "spec": to_plain(self.spec),
        }

    def condition_width(self, observations: int) -> int:
        """Width of `observation_condition` of `observations` observations."""
        return observations * self.obs_dim * (1 + 2 * self.spec.condition_fourier)

    def observation_condition(self, history: Tensor) -> Tensor:
        """The network condition of observations: normalised, flattened, and with
        `condition_fourier` octaves of sin/cos features (`dmc_core.nets.fourier`).

        Shapes:
            history: (B, k, obs_dim); returns (B, condition_width(k)).
        """
        normalised = self.obs_normalizer.normalize(history).flatten(1)
        return fourier_features(normalised, self.spec.condition_fourier)

    def planner_condition(self, history: Tensor) -> Conditioning:
        """A planner's conditioning: `s_0` in-painted, and with `film_observation` the current
        observation as the network condition too (in-painting reaches the other steps only
        through the network's convolutions)."""
        current = history[:, -1:]
        cond = self.observation_condition(current) if self.spec.film_observation else None
        return cond, self.inpaint_current_state(history)

    def inpaint_current_state(self, history: Tensor) -> tuple[Tensor, Tensor]:
        """In-painting that fixes `s_0` (the first `obs_dim` channels of step 0) to the newest
        observation of each history, normalised: planners' conditioning.

        Shapes:
            history: (B, To, obs_dim); returns mask (bool) and values, (B, H, transition_dim).
        """
        batch = history.shape[0]
        values = history.new_zeros(batch, self.horizon, self.transition_dim)
        values[:, 0, : self.obs_dim] = self.obs_normalizer.normalize(history[:, -1])
        one = torch.ones(batch, dtype=torch.long, device=history.device)
        return prefix_mask(one, self.horizon, self.obs_dim, self.transition_dim), values

    def _check_history(self, history: Tensor) -> None:
        want = (self.history_len, self.obs_dim)
        if history.ndim != 3 or tuple(history.shape[1:]) != want:
            raise ValueError(
                f"{self.kind}: history must have shape (B, {want[0]}, {want[1]}), "
                f"got {tuple(history.shape)}"
            )


def _plain(value: Any) -> Any:
    # Lists from YAML become tuples: backbones take size sequences such as dim_mults.
    return tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else value


def scored_actions(model: Any, z0: Tensor) -> Tensor:
    """The action sequence a critic of action chunks scores, raw units, differentiable in z0: a
    policy's executed chunk (`decode_actions`), a planner's planned actions (`decode_plan`; it
    executes the first `action_exec` of them and plans again). Works on anything with `role`
    and those decoders (a `ControlModel`, a cascade).

    Shapes:
        z0: (B, horizon, transition_dim) normalised; returns (B, L, act_dim), L the policy's
        `action_exec` or the planner's planned steps.
    """
    if model.role == "planner":
        return model.decode_plan(z0)[1]
    return model.decode_actions(z0)
