"""Alignment passes on a cascade (spec §4.4: the passes can also be applied to the cascade).

Every method sees a model whose condition is one tensor per sample, which it repeats, indexes
and concatenates along the batch. A cascade `p(x_r | x_cond, history)` has two conditions, so
`Refinement` binds the cascade to the model whose samples it refines (the checkpoint's frozen
`source`) and packs `x_cond` into the condition tensor; the methods then carry it along without
knowing it is there:

    condition = [history | x_cond flattened, repeated on every step]    (B, To, obs_dim + H x D)

`RefinedConditions` gives a pass its conditions: the dataset's histories as for any model, each
with a fresh `x_cond` sampled from the source, so the pass aligns the chain `source -> cascade`
as evaluation runs it. The held-out conditions are packed once, from a fixed seed, so that the
objective compares like with like. `ObservedReward` hands a reward the histories alone.

The LoRA adapters go on the cascade's network (its backbone and its `x_cond` encoder); the
source stays frozen and is saved inside the aligned cascade, which `evaluate` loads like any
`fit_cascade` output.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from dmc_align.conditions import ConditionPool
from dmc_align.rewards import RewardModel
from dmc_core.models import ControlModel
from dmc_core.models.base import Conditioning
from dmc_core.models.cascade import CascadeModel

__all__ = ["ObservedReward", "RefinedConditions", "Refinement"]


class Refinement(nn.Module):
    """A cascade bound to its source, with the `ControlModel` surface the passes use.

    Shapes:
        condition: (B, To, obs_dim + horizon x transition_dim), see the module docstring.
        z0: (B, horizon, transition_dim) normalised, the refined sample.
    """

    kind = "cascade"

    def __init__(self, cascade: CascadeModel) -> None:
        """Wrap `cascade`, which must record the model it refines.

        Raises:
            ValueError: the cascade has no source.
        """
        super().__init__()
        if cascade.source is None:
            raise ValueError("the cascade records no model to refine: it cannot be aligned")
        self.cascade = cascade
        self.obs_dim = cascade.refiner.obs_dim

    def __setattr__(self, name: str, value: Any) -> None:
        # `attach_lora` and `merged_copy` replace `model.net`: it is the cascade's network.
        if name == "net":
            self.cascade.refiner.net = value
            return
        super().__setattr__(name, value)

    # The refined model's shape ------------------------------------------------------------

    @property
    def net(self) -> nn.Module:
        """The cascade's denoiser network (what the adapters wrap)."""
        return self.cascade.refiner.net

    @property
    def source(self) -> ControlModel:
        """The frozen model whose samples are refined."""
        assert self.cascade.source is not None
        return self.cascade.source

    @property
    def role(self) -> str:
        """ "planner" or "policy"."""
        return self.cascade.role

    @property
    def spec(self) -> Any:
        """The cascade's model spec (the refined model's)."""
        return self.cascade.spec

    @property
    def horizon(self) -> int:
        """Steps of a sample."""
        return self.cascade.horizon

    @property
    def transition_dim(self) -> int:
        """Channels of one step of a sample."""
        return self.cascade.transition_dim

    @property
    def history_len(self) -> int:
        """Observations conditioned on."""
        return self.cascade.history_len

    @property
    def formulation(self) -> Any:
        """The cascade's diffusion formulation."""
        return self.cascade.formulation

    @property
    def clip_x0(self) -> float | None:
        """The refined model's clamp of the predicted x0 (see `ControlModel.clip_x0`)."""
        return self.cascade.refiner.clip_x0

    @property
    def act_normalizer(self) -> Any:
        """The action normaliser (rewards decode actions with it)."""
        return self.cascade.act_normalizer

    def decode_actions(self, z0: Tensor) -> Tensor:
        """The actions to execute, raw units."""
        return self.cascade.decode_actions(z0)

    def decode_plan(self, z0: Tensor) -> tuple[Tensor, Tensor]:
        """Planned states and actions, raw units (planners only)."""
        return self.cascade.decode_plan(z0)

    def loss_weights(self, like: Tensor) -> Tensor | None:
        """The cascade's element weights of the loss (as `fit_cascade` trained it)."""
        return self.cascade.loss_weights(like)

    # Packed conditions ----------------------------------------------------------------------

    def pack(self, history: Tensor, x_cond: Tensor) -> Tensor:
        """The condition of each (history, x_cond) pair."""
        flat = x_cond.to(history.dtype).flatten(1)
        steps = flat[:, None, :].expand(-1, history.shape[1], -1)
        return torch.cat([history, steps], dim=2)

    def observations(self, condition: Tensor) -> Tensor:
        """The observation histories of packed conditions, (B, To, obs_dim)."""
        self._check_history(condition)
        return condition[..., : self.obs_dim].contiguous()

    def unpack(self, condition: Tensor) -> tuple[Tensor, Tensor]:
        """(history, x_cond) of packed conditions."""
        x_cond = condition[:, -1, self.obs_dim :]
        shape = (condition.shape[0], self.horizon, self.transition_dim)
        return self.observations(condition), x_cond.reshape(shape).contiguous()

    @torch.no_grad()
    def draw_x_cond(self, history: Tensor, generator: torch.Generator) -> Tensor:
        """One sample of the source per history: what the cascade refines."""
        return self.source.sample(history, generator, record=False).x0

    # What the methods call ------------------------------------------------------------------

    def condition(self, condition: Tensor) -> Conditioning:
        """The cascade's network condition and in-painting."""
        return self.cascade.condition(*self.unpack(condition))

    # ControlModel's own algorithms, over packed conditions: each calls `_check_history`,
    # `condition`, `formulation` and `net`, which this class defines for the cascade.
    sample = ControlModel.sample
    denoising_loss = ControlModel.denoising_loss
    step_gaussian = ControlModel.step_gaussian

    def training_loss(self, window: Any, generator: torch.Generator) -> Tensor:
        """A cascade has no data windows of its own to clone."""
        raise NotImplementedError(
            "a cascade has no behaviour-cloning loss (dataset windows carry no x_cond)"
        )

    def describe(self) -> dict[str, Any]:
        """The cascade's rebuild recipe."""
        return self.cascade.describe()

    def _check_history(self, condition: Tensor) -> None:
        want = (self.history_len, self.obs_dim + self.horizon * self.transition_dim)
        if condition.ndim != 3 or tuple(condition.shape[1:]) != want:
            raise ValueError(
                f"cascade conditions must have shape (B, {want[0]}, {want[1]}) "
                f"(history and x_cond packed), got {tuple(condition.shape)}"
            )


class RefinedConditions:
    """A pass's conditions for a `Refinement`: histories of a `ConditionPool` with x_cond."""

    def __init__(self, pool: ConditionPool, model: Refinement, generator: torch.Generator):
        """Pack the held-out histories once, their x_cond drawn with `generator`."""
        self.pool, self.model = pool, model
        self.device = next(model.parameters()).device
        history = pool.held_out.to(self.device)
        self.held_out = model.pack(history, model.draw_x_cond(history, generator))

    def __len__(self) -> int:
        """Training histories."""
        return len(self.pool)

    def sample(self, batch: int, generator: torch.Generator) -> Tensor:
        """`batch` training histories, each with a fresh sample of the source to refine."""
        history = self.pool.sample(batch, generator).to(self.device)
        return self.model.pack(history, self.model.draw_x_cond(history, generator))

    def extend(self, histories: Tensor) -> None:
        """Add visited histories (online fine-tuning) to the training pool."""
        self.pool.extend(histories)

    def added(self) -> Tensor:
        """The histories `extend` added, in order."""
        return self.pool.added()


class ObservedReward:
    """A reward model fed the histories of packed conditions (rewards read observations)."""

    def __init__(self, base: RewardModel) -> None:
        """Wrap `base`."""
        self.base = base

    def __call__(self, model: Refinement, z0: Tensor, condition: Tensor) -> Tensor:
        """r(z_0) of the refined samples under their observation histories."""
        return self.base(model, z0, model.observations(condition))  # type: ignore[arg-type]
