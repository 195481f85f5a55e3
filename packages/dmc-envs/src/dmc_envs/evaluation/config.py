"""Schemas of the evaluation stages (`evaluate`, `summarize`): the protocol as data."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from dmc_core.config import BaseConfig, knob
from dmc_critic import SELECTION_RULES

#: The stage of every cascade run's rows starts with it (cascade, cascade_x2, ...).
CASCADE_STAGE = "cascade"
#: The stage of a baseline policy's rows (a `fit_policy` output: BC, IQL's policy).
BASELINE_STAGE = "baseline"

__all__ = [
    "BASELINE_STAGE",
    "CASCADE_STAGE",
    "Budget",
    "EvalProtocol",
    "EvaluateConfig",
    "RunSpec",
    "SummarizeConfig",
]


@dataclass(frozen=True)
class Budget:
    """Episodes and candidates per decision for one kind of model (paper §4)."""

    episodes: int = knob(64, ge=1, doc="episode seeds (start states) rolled out")
    candidates: int = knob(16, ge=1, doc="candidates per decision for the selection rules")


@dataclass(frozen=True)
class RunSpec:
    """One `evaluate@<name>` instance: which model, trained on which dataset, at which stage."""

    model: str = knob("diffuser", doc="model directory name under data/models (dvc.yaml)")
    dataset: str = knob("full", doc="make_dataset entry the model learned from (its task)")
    critic: str = knob("full", doc="fit_critic entry that ranks the candidates")
    stage: str = knob(
        "foundation", doc="what the model is: foundation, an alignment pass, baseline, ..."
    )
    label: str = knob("", doc="model name in the rows (empty: `model`); passes give their base")
    sweep: bool = knob(True, doc="run the candidates sweep (off for intermediate passes)")
    rules: list[str] = knob(
        factory=list, doc="rules of this run's summary rows (empty: the protocol's `rules`)"
    )
    cascade_passes: int = knob(
        0, ge=0, le=4, doc="model is a fit_cascade output: refine its model's samples this often"
    )
    also_stages: list[str] = knob(
        factory=list, doc="the rows once more under these stages (the recipe's end: aligned)"
    )

    def invalid_fields(self) -> Iterator[tuple[str, str]]:
        """Rules must be known; cascade runs (and only they) have stages that start with
        `cascade`; a baseline (a policy's mean action) has one rule, `none`."""
        yield from _unknown_rules("rules", self.rules)
        if self.stage == BASELINE_STAGE and set(self.rules) - {"none"}:
            yield "rules", f"{self.rules}: a baseline acts by its policy's mean action: [none]"
        cascaded = self.stage.startswith(CASCADE_STAGE)
        if self.cascade_passes and not cascaded:
            yield "stage", f"'{self.stage}': a cascade run's stage must start with 'cascade'"
        if cascaded and not self.cascade_passes:
            yield "cascade_passes", f"stage '{self.stage}' is a cascade's: set 1 or 2 passes"
        for extra in self.also_stages:
            if extra == self.stage or extra.startswith(CASCADE_STAGE) != cascaded:
                kind = "a cascade's" if cascaded else "not a cascade's"
                yield "also_stages", f"'{extra}': repeats the stage, or the run is {kind}"


def _unknown_rules(field: str, rules: list[str]) -> Iterator[tuple[str, str]]:
    for rule in rules:
        if rule not in SELECTION_RULES:
            yield field, f"unknown selection rule '{rule}' (rules: {SELECTION_RULES})"


def _foundation_runs() -> dict[str, RunSpec]:
    return {
        "diffuser": RunSpec(model="diffuser"),
        "policy": RunSpec(model="policy"),
    }


def _sweep_candidates() -> list[int]:
    return [1, 2, 4, 8, 16, 32]


def _sweep_rules() -> list[str]:
    return ["q_argmax", "q_softmax", "expectation"]


def _rules() -> list[str]:
    return ["none", "q_argmax"]


@dataclass(frozen=True)
class EvalProtocol:
    """How every model is evaluated (written into each results row)."""

    seed: int = knob(1000, ge=0, doc="seed of the episodes' start states and of the sampling")
    planner: Budget = knob(factory=lambda: Budget(episodes=64, candidates=16))
    policy: Budget = knob(factory=lambda: Budget(episodes=16, candidates=8))
    rules: list[str] = knob(factory=_rules, doc="rules of summary rows (none: one sample)")
    sweep_rules: list[str] = knob(factory=_sweep_rules, doc="rules of the candidates sweep")
    sweep_candidates: list[int] = knob(factory=_sweep_candidates, doc="candidates swept")
    softmax_temperature: float = knob(0.1, gt=0.0, doc="q_softmax: temperature, Q units")
    coherency_width: float = knob(
        0.05, gt=0.0, doc="planners: dynamics kernel width, in the task's state-gap units"
    )
    coherency_every: int = knob(1, ge=1, doc="measure coherency at every k-th decision")
    coherency_plans: int = knob(
        0, ge=0, doc="planners: candidates per decision whose plans are checked (0: all)"
    )
    entropy_candidates: int = knob(16, ge=2, doc="candidates drawn per start state for entropy")
    entropy_bins: int = knob(20, ge=2, doc="histogram bins over the action range, per dim")
    plot_trajectories: int = knob(32, ge=0, doc="episodes drawn in each rule's picture")
    frames: int = knob(
        12,
        ge=0,
        doc=(
            "frames of the first episode in each rule's contact sheet, <rule>_frames.png (0: "
            "none; tasks that cannot render have none). 12 frames: about 3 s for a 500-step "
            "MetaWorld episode, 1 s for PushT"
        ),
    )

    def invalid_fields(self) -> Iterator[tuple[str, str]]:
        """Rules must be known; swept candidate counts positive."""
        for field in ("rules", "sweep_rules"):
            yield from _unknown_rules(field, getattr(self, field))
        if any(n < 1 for n in self.sweep_candidates):
            yield "sweep_candidates", f"{self.sweep_candidates}: every count must be >= 1"


@dataclass(frozen=True)
class EvaluateConfig:
    """Stage `evaluate`: roll each model out in its task and measure it (spec §5-6)."""

    base: BaseConfig = knob(factory=BaseConfig)
    device: str = knob("auto", choices=("auto", "cpu", "cuda"), doc="auto: a GPU if present")
    protocol: EvalProtocol = knob(factory=EvalProtocol)
    runs: dict[str, RunSpec] = knob(factory=_foundation_runs)


@dataclass(frozen=True)
class SummarizeConfig:
    """Stage `summarize`: gather every evaluation into `summary.json` and the comparison plots."""

    base: BaseConfig = knob(factory=BaseConfig)
    headline: list[str] = knob(
        factory=lambda: ["normalized_score", "return_std", "coherency"],
        doc="row metrics shown by `dvc metrics show` / `dvc exp show`",
    )
