"""Cascading diffusion (spec §4.4): a model `p(x_r | x_cond)` refining a sample into a better one.

The cascade is a control model of the same kind and sample space as the model it refines (a plan
for a planner, an action chunk for a policy), conditioned as usual on the observation history
and, always (no condition dropout), on the sample `x_cond` to refine. It is warm-started from a
foundation's weights: the sample enters through an encoder whose output is added to the
backbone's time/condition embedding, and the encoder's last layer starts at zero, so the
warm-started cascade computes exactly what the foundation computes, whatever `x_cond` is.

A cascade checkpoint also carries the model whose samples it refines (`source`), so the
checkpoint alone rebuilds the whole chain `source -> cascade (-> cascade)` that evaluation rolls
out.

References:
    Ho et al., "Cascaded Diffusion Models for High Fidelity Image Generation" (2022): the
    low-resolution sample is a condition of the next model; "Maximize Your Diffusion", §3.4.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dmc_core.checkpoint import (
    check_state_fits,
    checkpoint_kind,
    load_checkpoint,
    save_checkpoint,
)
from dmc_core.diffusion import SampleResult
from dmc_core.errors import CheckpointError
from dmc_core.models.base import Conditioning, ControlModel
from dmc_core.models.normalizer import RangeNormalizer
from dmc_core.models.spec import spec_from_dict

__all__ = [
    "CASCADE_CHECKPOINT_KIND",
    "CascadeModel",
    "SampleEmbedding",
    "check_compatible",
    "is_cascade_checkpoint",
    "load_cascade",
    "rebuild_model",
    "save_cascade",
]

CASCADE_CHECKPOINT_KIND = "dmc-cascade-model"


class SampleEmbedding(nn.Module):
    """The backbone's time/condition embedding plus an embedding of the sample to refine.

    The condition the backbone receives is `[own condition, flattened x_cond]`; the first part
    goes to the original embedding (None when the foundation is unconditional), the second
    through Linear -> Mish -> Linear whose last layer starts at zero.

    Shapes:
        t: (B,); cond: (B, own_dim + sample_dim); returns (B, out_dim) as the original.
    """

    def __init__(self, inner: nn.Module, own_dim: int, sample_dim: int, hidden: int) -> None:
        """Wrap `inner` (a `TimeCondEmbedding`) and build the zero-started sample encoder."""
        super().__init__()
        self.inner = inner
        self.own_dim, self.sample_dim = own_dim, sample_dim
        self.out_dim = int(inner.out_dim)
        self.sample = nn.Sequential(
            nn.Linear(sample_dim, hidden), nn.Mish(), nn.Linear(hidden, self.out_dim)
        )
        nn.init.zeros_(self.sample[-1].weight)
        nn.init.zeros_(self.sample[-1].bias)

    def forward(self, t: Tensor, cond: Tensor) -> Tensor:
        """The original embedding of (t, own condition) plus the sample's embedding."""
        own = cond[:, : self.own_dim] if self.own_dim else None
        return self.inner(t, own) + self.sample(cond[:, self.own_dim :])


class CascadeModel(nn.Module):
    """`p(x_r | x_cond, history)`: a control model that also sees the sample it refines.

    `refiner` is a `ControlModel` whose backbone's embedding is wrapped by `SampleEmbedding`;
    its own conditioning (in-painting of the current state, the history condition) is kept.
    `source`, when given, is the model whose samples the cascade was trained to refine; it is
    frozen and saved with the cascade.

    Shapes:
        history: (B, To, obs_dim) raw; x_cond, z0: (B, horizon, transition_dim) normalised.
    """

    kind = "cascade"

    def __init__(
        self, refiner: ControlModel, hidden: int = 64, source: ControlModel | None = None
    ) -> None:
        """Wrap `refiner`'s backbone (its weights are kept: the warm start)."""
        super().__init__()
        net = refiner.net
        if not hasattr(net, "embed") or not hasattr(net, "cond_dim"):
            raise ValueError(f"backbone {type(net).__name__} has no embedding to condition")
        own = int(net.cond_dim)
        self.sample_dim = refiner.horizon * refiner.transition_dim
        net.embed = SampleEmbedding(net.embed, own, self.sample_dim, hidden)
        net.cond_dim = own + self.sample_dim
        self.hidden = hidden
        self.refiner = refiner
        self.source = source
        if source is not None:
            check_compatible(source, refiner)
            source.eval()
            for parameter in source.parameters():
                parameter.requires_grad_(False)

    # The refiner's shape ----------------------------------------------------------------

    @property
    def role(self) -> str:
        """ "planner" or "policy", as the refined model."""
        return self.refiner.role

    @property
    def spec(self) -> Any:
        """The refiner's model spec."""
        return self.refiner.spec

    @property
    def horizon(self) -> int:
        """Steps of a sample."""
        return self.refiner.horizon

    @property
    def transition_dim(self) -> int:
        """Channels of one step of a sample."""
        return self.refiner.transition_dim

    @property
    def history_len(self) -> int:
        """Observations conditioned on."""
        return self.refiner.history_len

    @property
    def formulation(self) -> Any:
        """The refiner's diffusion formulation."""
        return self.refiner.formulation

    @property
    def act_normalizer(self) -> RangeNormalizer:
        """The refiner's action normaliser (rewards decode actions with it)."""
        return self.refiner.act_normalizer

    def decode_actions(self, z0: Tensor) -> Tensor:
        """The actions to execute, raw units (the refiner's decoding)."""
        return self.refiner.decode_actions(z0)

    def decode_plan(self, z0: Tensor) -> tuple[Tensor, Tensor]:
        """Planned states and actions, raw units (planners only)."""
        return self.refiner.decode_plan(z0)  # type: ignore[attr-defined]

    # Conditioning, sampling, loss -----------------------------------------------------------

    def condition(self, history: Tensor, x_cond: Tensor) -> Conditioning:
        """The refiner's conditioning with the flattened `x_cond` appended to the condition."""
        self.refiner._check_history(history)
        want = (history.shape[0], self.horizon, self.transition_dim)
        if tuple(x_cond.shape) != want:
            raise ValueError(f"x_cond must have shape {want}, got {tuple(x_cond.shape)}")
        cond, inpaint = self.refiner.condition(history)
        flat = x_cond.to(history.dtype).flatten(1)
        return (flat if cond is None else torch.cat([cond, flat], dim=1)), inpaint

    def sample(
        self, history: Tensor, x_cond: Tensor, generator: torch.Generator, **options: Any
    ) -> SampleResult:
        """One refined sample per (history, x_cond) with the formulation's sampler."""
        cond, inpaint = self.condition(history, x_cond)
        shape = (history.shape[0], self.horizon, self.transition_dim)
        options.setdefault("clip_x0", self.refiner.clip_x0)
        return self.formulation.sample(
            self.refiner.net, shape, cond, generator, inpaint=inpaint, **options
        )

    @torch.no_grad()
    def refine(
        self, history: Tensor, x_cond: Tensor, generator: torch.Generator, passes: int = 1
    ) -> Tensor:
        """Apply the cascade `passes` times, each pass refining the previous pass's sample."""
        z = x_cond
        for _ in range(passes):
            z = self.sample(history, z, generator, record=False).x0
        return z

    def loss_weights(self, like: Tensor) -> Tensor | None:
        """The refiner's element weights (a Diffuser's first action weighs `action_weight`)."""
        return self.refiner.loss_weights(like)

    def denoising_loss(
        self, x_r: Tensor, history: Tensor, x_cond: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        """Per-sample diffusion loss of the better samples `x_r` given `x_cond`, (B,).

        In-painted entries (a planner's current state) are fixed in z_t and left out.
        """
        cond, inpaint = self.condition(history, x_cond)
        mask = None if inpaint is None else inpaint[0]
        weights = self.loss_weights(x_r)
        return self.formulation.loss(self.refiner.net, x_r, cond, generator, mask, weights)

    def describe(self) -> dict[str, Any]:
        """The rebuild recipe: the refiner's and the source's descriptions, the encoder width."""
        return {
            "kind": self.kind,
            "hidden": self.hidden,
            "refiner": self.refiner.describe(),
            "source": None if self.source is None else self.source.describe(),
        }


def check_compatible(source: ControlModel, refiner: ControlModel) -> None:
    """Raise ValueError unless `source`'s samples live in `refiner`'s sample space."""
    mine = (refiner.kind, refiner.horizon, refiner.transition_dim, refiner.history_len)
    theirs = (source.kind, source.horizon, source.transition_dim, source.history_len)
    if mine != theirs:
        raise ValueError(
            f"the cascade (kind, horizon, transition_dim, history) {mine} cannot refine "
            f"samples of {theirs}"
        )
    for name in ("obs_normalizer", "act_normalizer"):
        a, b = getattr(source, name).state_dict(), getattr(refiner, name).state_dict()
        if any(not torch.allclose(a[k].float(), b[k].float()) for k in a):
            raise ValueError(f"the refined model and the cascade's foundation differ in {name}")


def rebuild_model(description: Mapping[str, Any], source: str) -> ControlModel:
    """An untrained `ControlModel` of a `describe()` record (weights to be loaded)."""
    from dmc_core.models import MODELS

    kind = description.get("kind")
    if kind not in MODELS:
        raise CheckpointError(f"{source}: unknown model kind {kind!r}")
    spec = spec_from_dict(description["spec"], source)
    return MODELS[kind](
        spec,
        RangeNormalizer.empty(int(description["obs_dim"])),
        RangeNormalizer.empty(int(description["act_dim"])),
    )


def save_cascade(
    path: str | os.PathLike[str], cascade: CascadeModel, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write the cascade (and its source model) so that `load_cascade` rebuilds it."""
    config = {"checkpoint_kind": CASCADE_CHECKPOINT_KIND, **cascade.describe()}
    return save_checkpoint(path, cascade.state_dict(), config, metadata)


def is_cascade_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether a checkpoint's sidecar says it holds a cascade."""
    return checkpoint_kind(path) == CASCADE_CHECKPOINT_KIND


def load_cascade(path: str | os.PathLike[str], device: str = "cpu") -> CascadeModel:
    """Rebuild a cascade saved by `save_cascade`; raise `CheckpointError` if impossible."""
    checkpoint = load_checkpoint(path, device=device)
    config = checkpoint.config
    if config.get("checkpoint_kind") != CASCADE_CHECKPOINT_KIND:
        raise CheckpointError(f"{path}: not a dmc cascade checkpoint")
    refiner = rebuild_model(config["refiner"], str(path))
    source = None if config.get("source") is None else rebuild_model(config["source"], str(path))
    cascade = CascadeModel(refiner, int(config["hidden"]))
    cascade.source = source  # the normalisers are checked once the weights are in
    check_state_fits(path, cascade.state_dict(), checkpoint.tensors, "the recorded cascade")
    cascade.load_state_dict(checkpoint.tensors)
    if source is not None:
        source.eval().requires_grad_(False)
    return cascade.to(device).eval()
