"""The alignment recipe as data: the `align` section of `params.yaml`.

A recipe is an ordered mapping of passes. Each pass names its foundation model, where it
starts (`after`: the foundation's name, or an earlier pass it continues), its method and that
method's knobs, and the schedule that stops it or rolls it back. Every pass is one DVC stage
instance (`align@<pass>`) whose input is the previous pass's checkpoint, so editing pass k re-runs
passes k, k+1, ... only.
Everything is validated before any training starts: an unknown method or knob, a pass that
continues from an unknown or later pass, or a pass of another model is a `ConfigError` naming it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from dmc_core.config import BaseConfig, knob

__all__ = [
    "CREDIT_KINDS",
    "DIVERGENCES",
    "EDA_VARIANTS",
    "LORA_LAYERS",
    "METHODS",
    "METHOD_MODEL_KINDS",
    "REWARDS",
    "AlignConfig",
    "CollapseSpec",
    "CreditSpec",
    "DPOSpec",
    "EDASpec",
    "LoraSpec",
    "OnlineSpec",
    "PPOSpec",
    "PassSpec",
    "QVPGSpec",
    "SFTSpec",
]

#: The alignment methods a pass can run (one file each in `dmc_align.methods`).
METHODS = ("ppo", "qvpg", "dpo", "sft", "eda")
#: Methods that need a particular kind of model: EDA compares log-densities, which only a
#: bottleneck diffusion model (BDM) exposes.
METHOD_MODEL_KINDS = {"eda": ("bdm",)}
#: EDA's targets: softmax of the Q values (value-based) or one-hot on the best (preference).
EDA_VARIANTS = ("value", "preference")
#: r(z_0): the critic's Q of the first action, or the task return of the planned trajectory.
REWARDS = ("q_first_action", "plan_return")
#: kappa_t: equal, decreasing towards the noisy end, or step/chain direction similarity.
CREDIT_KINDS = ("uniform", "decreasing", "direction")
#: Divergence control of the RL methods: PPO ratio clipping, KL to the reference, or none.
DIVERGENCES = ("clip", "kl", "none")
#: Layer types LoRA adapts.
LORA_LAYERS = ("linear", "conv1d")


@dataclass(frozen=True)
class LoraSpec:
    """The LoRA adapters every pass trains (one adapter set, shared by all passes of a model)."""

    rank: int = knob(8, ge=1, doc="rank r of every adapter")
    alpha: float = knob(16.0, gt=0.0, doc="scaling alpha (the update is scaled by alpha / r)")
    dropout: float = knob(0.0, ge=0.0, lt=1.0, doc="dropout on the adapter input")
    layers: list[str] = knob(factory=lambda: list(LORA_LAYERS), doc="layer types adapted")
    bias: str = knob("none", choices=("none", "all", "lora_only"), doc="biases trained too")

    def invalid_fields(self) -> Iterator[tuple[str, str]]:
        """Layer types must be known, and at least one given."""
        unknown = [name for name in self.layers if name not in LORA_LAYERS]
        if unknown or not self.layers:
            yield "layers", f"{self.layers}: choose one or more of {LORA_LAYERS}"


@dataclass(frozen=True)
class CreditSpec:
    """Denoising credit weights kappa_t over the trained steps (spec §4.1)."""

    kind: str = knob("uniform", choices=CREDIT_KINDS, doc="uniform, decreasing or direction")
    decay: float = knob(0.9, gt=0.0, le=1.0, doc="decreasing: kappa = decay^(steps to z_0)")


@dataclass(frozen=True)
class PPOSpec:
    """REINFORCE with PPO ratio clipping over the denoising MDP (DDPO / DPPO)."""

    candidates: int = knob(8, ge=2, doc="samples per condition; advantages standardised in it")
    last_steps: int = knob(10, ge=1, doc="denoising steps trained, the last ones (DPPO K')")
    std_floor: float = knob(0.1, gt=0.0, doc="minimum std of every step (DPPO: 0.1)")
    clip: float = knob(0.2, gt=0.0, doc="PPO clip range on the summed log-probability ratio")
    divergence: str = knob("clip", choices=DIVERGENCES, doc="clip, kl or none")
    kl_weight: float = knob(0.01, ge=0.0, doc="kl: weight of the per-step KL to the reference")
    advantage_clip: float = knob(5.0, gt=0.0, doc="advantages clipped to +-this (DDPO: 5)")
    advantage_std_floor: float = knob(0.05, gt=0.0, doc="floor of the per-condition reward std")
    updates_per_batch: int = knob(2, ge=1, doc="updates on one sampled batch (inner epochs)")
    credit: CreditSpec = knob(factory=CreditSpec)


@dataclass(frozen=True)
class QVPGSpec:
    """Q-value policy gradient through the reparameterised chain (DRaFT-K / Diffusion-QL)."""

    last_steps: int = knob(5, ge=1, doc="K: gradients flow through the last K steps only")
    candidates: int = knob(1, ge=1, doc="samples per condition (>= 2 for entropy)")
    bc_weight: float = knob(0.1, ge=0.0, doc="weight of the diffusion loss on the dataset")
    divergence: str = knob("none", choices=("kl", "none"), doc="kl: path KL to the reference")
    kl_weight: float = knob(0.01, ge=0.0, doc="kl: weight of the per-step KL")
    credit: CreditSpec = knob(factory=CreditSpec)


@dataclass(frozen=True)
class DPOSpec:
    """Diffusion-DPO on winner/loser pairs of reference samples (Wallace et al.)."""

    candidates: int = knob(4, ge=2, doc="reference samples per condition; best vs worst")
    beta: float = knob(50.0, gt=0.0, doc="beta, on the per-dimension mean squared error")
    snr_weighting: str = knob("none", choices=("none", "min_snr"), doc="w(lambda_t)")
    min_snr_gamma: float = knob(5.0, gt=0.0, doc="min_snr: w = min(SNR, gamma) / SNR, mean 1")
    min_reward_gap: float = knob(0.0, ge=0.0, doc="pairs closer than this in reward are dropped")
    updates_per_batch: int = knob(4, ge=1, doc="updates on one sampled set of pairs")


@dataclass(frozen=True)
class SFTSpec:
    """Supervised fine-tuning on the best samples (filtered / rejection-sampling SFT)."""

    candidates: int = knob(16, ge=1, doc="samples per condition")
    keep_fraction: float = knob(0.0625, gt=0.0, le=1.0, doc="top fraction kept per condition")
    generator: str = knob(
        "current",
        choices=("foundation", "current", "dataset"),
        doc="who samples: a model, or the dataset's own windows ranked by advantage",
    )
    likelihood_threshold: float = knob(
        0.0, ge=0.0, doc="current: drop samples whose foundation loss exceeds this (0 = off)"
    )
    likelihood_draws: int = knob(4, ge=1, doc="(t, noise) draws of the likelihood estimate")
    likelihood_estimator: str = knob(
        "denoising",
        choices=("denoising", "energy"),
        doc="denoising: the foundation's loss; energy: a BDM's log-density, within a condition",
    )
    updates_per_batch: int = knob(20, ge=1, doc="updates between two rounds of sampling")
    batch_size: int = knob(256, ge=1, doc="samples per update")
    keep_rounds: int = knob(
        1, ge=0, doc="rounds of kept samples trained on: the newest (1), the last k, all (0)"
    )


@dataclass(frozen=True)
class EDASpec:
    """Efficient Diffusion Alignment of a BDM (Chen et al. 2024, Eq. 14; spec §4.7).

    Defaults follow the paper scaled to a small task: K = 16 candidates, alpha = 3 (the
    released code's Q scale); beta is per task in the paper (0.1 .. 5).
    """

    candidates: int = knob(16, ge=2, doc="K: reference samples per state, labelled by Q")
    alpha: float = knob(3.0, ge=0.0, doc="value target: softmax_K(alpha Q)")
    beta: float = knob(1.0, gt=0.0, doc="logits: beta (f_theta - f_phi) of the noised candidates")
    variant: str = knob("value", choices=EDA_VARIANTS, doc="value (soft Q) or preference (one-hot)")
    standardise_q: bool = knob(False, doc="standardise Q within each state before alpha")
    updates_per_batch: int = knob(10, ge=1, doc="updates on one set of candidates")


@dataclass(frozen=True)
class CollapseSpec:
    """When a pass counts as collapsed, and what a rollback does (spec §4.5)."""

    loss_spike: float = knob(20.0, gt=1.0, doc="|loss| above this x the recent median (not PPO)")
    reward_drop: float = knob(0.25, gt=0.0, doc="objective below best - this x |best|")
    lr_decay: float = knob(0.5, gt=0.0, lt=1.0, doc="learning rate x this on a rollback")
    max_rollbacks: int = knob(3, ge=0, doc="rollbacks before the pass gives up")


@dataclass(frozen=True)
class OnlineSpec:
    """Online fine-tuning: roll the model out, add the data, keep training the critic."""

    enabled: bool = knob(False, doc="turn online fine-tuning on")
    every: int = knob(50, ge=1, doc="pass steps between two rounds of rollouts")
    episodes: int = knob(64, ge=1, doc="episodes per round (one sample per decision)")
    critic_steps: int = knob(300, ge=0, doc="critic updates per round")
    critic_batch: int = knob(256, ge=1, doc="transitions per critic update")
    online_fraction: float = knob(0.5, gt=0.0, le=1.0, doc="share of online data in a batch")


@dataclass(frozen=True)
class PassSpec:
    """One alignment pass: what it aligns, with which method, and when it stops."""

    model: str = knob(doc="pretrain.models entry it aligns (its foundation)")
    after: str = knob(doc="where it starts: the foundation (= model) or an earlier pass")
    method: str = knob("qvpg", choices=METHODS, doc="ppo, qvpg, dpo, sft or eda")
    dataset: str = knob(doc="make_dataset entry: conditions and BC data (the model's)")
    critic: str = knob(doc="fit_critic entry that gives r(z_0)")
    reward: str = knob("q_first_action", choices=REWARDS, doc="r(z_0)")
    entropy_weight: float = knob(0.0, ge=0.0, doc="weight of the nearest-neighbour entropy bonus")
    dynamics_weight: float = knob(
        0.0, ge=0.0, doc="planners: reward - this x (1 - the plan's dynamics kernel); 0 = off"
    )
    dynamics_width: float = knob(0.05, gt=0.0, doc="that kernel's width, state units")
    lr: float = knob(3e-4, gt=0.0, doc="Adam learning rate of the adapters")
    grad_clip: float = knob(1.0, gt=0.0, doc="gradient-norm clip")
    max_steps: int = knob(400, ge=1, doc="most updates of the pass")
    conditions: int = knob(256, ge=1, doc="conditions (observation histories) per batch")
    held_out: int = knob(256, ge=1, doc="held-out conditions of the tracked objective")
    eval_every: int = knob(25, ge=1, doc="updates between two objective measurements")
    snapshot_every: int = knob(
        25, ge=1, doc="updates between resumable snapshots (at the end of a method's batch)"
    )
    patience: int = knob(4, ge=1, doc="measurements without improvement before stopping")
    min_delta: float = knob(0.005, ge=0.0, doc="gain that restarts the patience, x |reference|")
    collapse: CollapseSpec = knob(factory=CollapseSpec)
    online: OnlineSpec = knob(factory=OnlineSpec)
    ppo: PPOSpec = knob(factory=PPOSpec)
    qvpg: QVPGSpec = knob(factory=QVPGSpec)
    dpo: DPOSpec = knob(factory=DPOSpec)
    sft: SFTSpec = knob(factory=SFTSpec)
    eda: EDASpec = knob(factory=EDASpec)

    @property
    def method_spec(self) -> PPOSpec | QVPGSpec | DPOSpec | SFTSpec | EDASpec:
        """The knobs of this pass's method."""
        return getattr(self, self.method)  # type: ignore[no-any-return]

    def invalid_fields(self) -> Iterator[tuple[str, str]]:
        """The entropy bonus needs two samples per condition."""
        if self.method not in METHODS:
            return  # reported by the `choices` check
        candidates = getattr(self.method_spec, "candidates", 2)
        if self.entropy_weight > 0 and candidates < 2:
            yield "entropy_weight", f"needs {self.method}.candidates >= 2, got {candidates}"


def _nav1d_passes() -> dict[str, PassSpec]:
    return {
        "diffuser_qvpg": PassSpec(
            model="diffuser", after="diffuser", method="qvpg", dataset="full", critic="full"
        )
    }


@dataclass(frozen=True)
class AlignConfig:
    """Stage `align`: the LoRA adapters and the passes, one DVC stage instance per pass."""

    base: BaseConfig = knob(factory=BaseConfig)
    device: str = knob("auto", choices=("auto", "cpu", "cuda"), doc="auto: a GPU if present")
    lora: LoraSpec = knob(factory=LoraSpec)
    passes: dict[str, PassSpec] = knob(factory=_nav1d_passes)

    def invalid_fields(self) -> Iterator[tuple[str, str]]:
        """A pass starts from its foundation or an earlier pass of the same model (the order of
        `passes` is the recipe's)."""
        seen: dict[str, str] = {}
        for name, spec in self.passes.items():
            key = f"passes.{name}.after"
            if name == spec.model:
                yield f"passes.{name}", "a pass cannot be named like its foundation model"
            elif spec.after == spec.model:
                pass
            elif spec.after not in self.passes:
                yield (
                    key,
                    (
                        f"'{spec.after}' is neither the foundation '{spec.model}' nor a pass "
                        f"(passes: {sorted(self.passes)})"
                    ),
                )
            elif spec.after not in seen:
                yield (
                    key,
                    f"'{spec.after}' comes later in the recipe; a pass continues an earlier one",
                )
            elif seen[spec.after] != spec.model:
                yield key, f"'{spec.after}' aligns '{seen[spec.after]}', this pass '{spec.model}'"
            seen[name] = spec.model
