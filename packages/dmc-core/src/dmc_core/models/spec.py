"""What defines a foundation model: its kind, shapes, backbone and diffusion formulation.

These schemas are the `pretrain.models.<name>` entries of `params.yaml`, and a model checkpoint
records the resolved spec, so a checkpoint alone rebuilds its model.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dmc_core.config import from_plain, knob
from dmc_core.models.inpainting import INPAINTING_MODES

__all__ = [
    "EPS_FORMULATIONS",
    "FORMULATIONS",
    "MODEL_KINDS",
    "POLICY_KINDS",
    "FormulationSpec",
    "ModelSpec",
    "TrainSpec",
    "spec_from_dict",
]

#: The models of spec §2 (two planners and a policy) and EDA's bottleneck diffusion policy.
MODEL_KINDS = ("diffuser", "decision_diffuser", "diffusion_policy", "bdm")
POLICY_KINDS = ("diffusion_policy", "bdm")
#: Formulations whose network predicts the noise: a BDM's gradient is a noise prediction.
EPS_FORMULATIONS = ("ddpm", "ddim", "sm")
FORMULATIONS = ("ddpm", "ddim", "sm", "fm")


@dataclass(frozen=True)
class FormulationSpec:
    """The diffusion formulation: training loss and sampler (paper Table 2's columns)."""

    name: str = knob("ddpm", choices=FORMULATIONS, doc="ddpm, ddim, sm (VP-SDE) or fm (flow)")
    steps: int = knob(20, ge=1, le=1000, doc="diffusion steps T of training and sampling")
    schedule: str = knob("vp", choices=("vp", "cosine", "linear"), doc="beta schedule (ddpm/ddim)")
    sample_steps: int = knob(0, ge=0, le=1000, doc="reverse steps (ddim/sm/fm); 0 = steps")
    eta: float = knob(0.0, ge=0.0, le=1.0, doc="ddim: 0 deterministic .. 1 ancestral")
    sampler: str = knob("sde", choices=("sde", "ode"), doc="sm: reverse SDE or probability flow")
    clip_x0: float = knob(
        0.0, ge=0.0, doc="clamp the predicted x0 to +-clip_x0 at every reverse step (0 = off)"
    )

    def invalid_fields(self) -> Iterator[tuple[str, str]]:
        """DDIM samples a subsequence of the training steps, so it cannot take more of them."""
        if self.name == "ddim" and self.sample_steps > self.steps:
            yield "sample_steps", f"{self.sample_steps} exceeds steps ({self.steps}) for ddim"


@dataclass(frozen=True)
class TrainSpec:
    """How a foundation model is trained (`pretrain`)."""

    steps: int = knob(4000, ge=1, doc="gradient steps")
    batch_size: int = knob(256, ge=1, doc="windows per step (over all processes under DDP)")
    lr: float = knob(1e-3, gt=0.0, doc="AdamW learning rate after warm-up")
    weight_decay: float = knob(1e-6, ge=0.0, doc="AdamW weight decay")
    warmup_steps: int = knob(200, ge=0, doc="linear learning-rate warm-up, then cosine decay")
    grad_clip: float = knob(1.0, ge=0.0, doc="max gradient norm (0 = no clipping)")
    ema_decay: float = knob(0.995, ge=0.0, lt=1.0, doc="EMA of the weights; the EMA is saved")
    checkpoint_every: int = knob(500, ge=1, doc="steps between resumable checkpoints")
    log_every: int = knob(50, ge=1, doc="steps between logged metrics")


def _default_backbone() -> dict[str, Any]:
    return {"name": "unet"}


@dataclass(frozen=True)
class ModelSpec:
    """One foundation model: `pretrain.models.<name>` in `params.yaml`."""

    kind: str = knob("diffuser", choices=MODEL_KINDS, doc="planner or policy kind (spec §2, §4.7)")
    dataset: str = knob("full", doc="make_dataset entry it learns from (dvc.yaml reads it)")
    horizon: int = knob(8, ge=1, le=1024, doc="planned steps H, or the action chunk's length")
    history: int = knob(1, ge=1, le=64, doc="observations conditioned on (policies' To)")
    action_exec: int = knob(1, ge=1, doc="actions executed per decision (first of the plan)")
    inpainting: str = knob("causal_prefix", choices=INPAINTING_MODES, doc="planner training")
    action_weight: float = knob(10.0, ge=0.0, doc="diffuser: loss weight of the first action")
    inverse_dynamics_hidden: int = knob(256, ge=1, doc="decision_diffuser: f(s, s') width")
    film_observation: bool = knob(
        False, doc="planners: the current observation is also the network's FiLM condition"
    )
    condition_fourier: int = knob(
        0, ge=0, le=16, doc="octaves of sin/cos features of the observation condition (0: raw)"
    )
    backbone: dict[str, Any] = knob(
        factory=_default_backbone, doc="name (unet, dit, mlp) and its size keywords"
    )
    formulation: FormulationSpec = knob(factory=FormulationSpec)
    train: TrainSpec = knob(factory=TrainSpec)

    @property
    def is_policy(self) -> bool:
        """Policies generate actions from an observation history; planners generate plans."""
        return self.kind in POLICY_KINDS

    @property
    def decodable_actions(self) -> int:
        """Actions one sample decodes to: H, or H - 1 for the Decision Diffuser (inverse dynamics
        between consecutive planned states)."""
        return self.horizon - (1 if self.kind == "decision_diffuser" else 0)

    @property
    def scored_actions(self) -> int:
        """Actions of one sample that a critic of action chunks can score
        (`dmc_core.models.scored_actions`): a policy's executed chunk, a planner's plan."""
        return self.action_exec if self.is_policy else self.decodable_actions

    def invalid_fields(self) -> Iterator[tuple[str, str]]:
        """Cross-field rules of the model's shapes, conditioning and backbone."""
        executable = self.decodable_actions
        if self.action_exec > executable:
            yield "action_exec", f"{self.action_exec} exceeds the {executable} decodable actions"
        if self.kind == "decision_diffuser" and self.horizon < 2:
            yield "horizon", "decision_diffuser needs horizon >= 2 (inverse dynamics on s, s')"
        if self.is_policy and self.inpainting != "none":
            yield "inpainting", "policies condition on history, not in-painting: set 'none'"
        if not self.is_policy and self.history != 1:
            yield "history", "planners condition on the current observation: set 1"
        if self.is_policy and self.film_observation:
            yield "film_observation", "policies always condition on their history: set false"
        if self.condition_fourier and not (self.is_policy or self.film_observation):
            yield (
                "condition_fourier",
                "an in-painted observation has no features: set film_observation true, or 0",
            )
        if self.kind == "bdm" and self.formulation.name not in EPS_FORMULATIONS:
            yield (
                "formulation.name",
                f"bdm predicts eps as a gradient; {self.formulation.name} does not predict eps "
                f"(use one of {EPS_FORMULATIONS})",
            )
        yield from _backbone_problems(self.backbone)


def _backbone_problems(backbone: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    from dmc_core.nets import BACKBONES

    name = backbone.get("name")
    if name not in BACKBONES:
        yield "backbone.name", f"{name!r} is not one of {sorted(BACKBONES)}"
        return
    accepted = _size_keywords(BACKBONES[name])
    for key in backbone:
        if key != "name" and key not in accepted:
            yield f"backbone.{key}", f"not a size keyword of {name} (accepted: {accepted})"


def _size_keywords(cls: type) -> list[str]:
    fixed = {"self", "horizon", "transition_dim", "cond_dim"}
    return [p for p in inspect.signature(cls.__init__).parameters if p not in fixed]


def spec_from_dict(values: Mapping[str, Any], source: str = "<checkpoint>") -> ModelSpec:
    """Rebuild a `ModelSpec` from its plain form (a checkpoint's sidecar), validated."""
    return from_plain(ModelSpec, values, source, "spec")
