"""What defines an IQL critic and how it is trained: the `fit_critic` entry of `params.yaml`.

A critic checkpoint records the resolved `CriticSpec`, so a checkpoint alone rebuilds its critic.

References:
    Kostrikov, Nair, Levine, "Offline Reinforcement Learning with Implicit Q-Learning", ICLR 2022.
    Li, Zhou, Levine, "Reinforcement Learning with Action Chunking", NeurIPS 2025 (a critic of
    the chunk of actions a policy executes, backed up over as many steps: `action_chunk`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dmc_core.config import from_plain, knob

__all__ = [
    "REWARD_NORMALIZATIONS",
    "CriticSpec",
    "CriticTrainSpec",
    "critic_spec_from_dict",
]

#: `none` keeps the dataset's rewards; `trajectory_range` is IQL's locomotion preprocessing.
REWARD_NORMALIZATIONS = ("none", "trajectory_range")


@dataclass(frozen=True)
class CriticTrainSpec:
    """How an IQL critic is trained (one Adam optimiser over the twin Qs and V)."""

    steps: int = knob(10000, ge=1, doc="gradient steps")
    batch_size: int = knob(256, ge=1, doc="transitions per step")
    lr: float = knob(3e-4, gt=0.0, doc="Adam learning rate of the Q and V networks")
    checkpoint_every: int = knob(2000, ge=1, doc="steps between resumable checkpoints")
    log_every: int = knob(100, ge=1, doc="steps between logged metrics")


@dataclass(frozen=True)
class CriticSpec:
    """One IQL critic: its data, Bellman backup, reward preprocessing, networks and training."""

    dataset: str = knob("full", doc="make_dataset entry it learns from (dvc.yaml reads it)")
    expectile: float = knob(0.9, ge=0.5, lt=1.0, doc="IQL expectile tau of V's loss")
    discount: float = knob(1.0, gt=0.0, le=1.0, doc="discount gamma of the TD target")
    action_chunk: int = knob(
        1,
        ge=1,
        le=64,
        doc="actions Q scores: Q(s_t, a_t..a_t+k-1) with a k-step backup (1 = IQL's Q(s, a))",
    )
    terminal_on_timeout: bool = knob(
        True, doc="a time-limit end is terminal (true when time is observed, as Nav1D's t/H)"
    )
    reward_normalization: str = knob(
        "none", choices=REWARD_NORMALIZATIONS, doc="none, or trajectory_range (IQL locomotion)"
    )
    reward_range_target: float = knob(
        1000.0, gt=0.0, doc="trajectory_range: r * this / (max - min episode return); IQL 1000"
    )
    reward_scale: float = knob(1.0, gt=0.0, doc="after normalisation: r' = scale * r + shift")
    reward_shift: float = knob(0.0, doc="after normalisation: r' = scale * r + shift")
    hidden: int = knob(256, ge=1, doc="width of the hidden layers of every network")
    layers: int = knob(2, ge=1, le=16, doc="hidden layers of every network")
    fourier_frequencies: int = knob(
        4, ge=0, le=16, doc="Fourier features sin/cos(pi 2^k x), k < this, of inputs; 0 = off"
    )
    layer_norm: bool = knob(True, doc="LayerNorm after each hidden Linear (IDQL's critic)")
    target_update: float = knob(0.005, gt=0.0, le=1.0, doc="Polyak rate of the target Qs")
    train: CriticTrainSpec = knob(factory=CriticTrainSpec)

    def invalid_fields(self) -> Iterator[tuple[str, str]]:
        """Without discount or terminal ends, values bootstrap past every episode end forever."""
        if self.discount == 1.0 and not self.terminal_on_timeout:
            yield (
                "terminal_on_timeout",
                "discount 1.0 with terminal_on_timeout false bootstraps past every time-limit "
                "end without decay: set discount < 1 or terminal_on_timeout true",
            )


def critic_spec_from_dict(values: Mapping[str, Any], source: str = "<checkpoint>") -> CriticSpec:
    """Rebuild a `CriticSpec` from its plain form (a checkpoint's sidecar), validated."""
    return from_plain(CriticSpec, values, source, "spec")
