"""Stage `evaluate`: roll one model out by the paper's protocol and measure it (spec §5-6).

    python -m dmc_envs evaluate --name diffuser --model data/models/diffuser/model.safetensors \
        --dataset data/datasets/nav1d/full.hdf5 --critic data/critics/full/critic.safetensors \
        --out data/metrics/evaluate/diffuser --plots data/plots/evaluate/diffuser

For every selection rule of `evaluate.protocol.rules` (at the protocol's candidates; `none`
takes one sample) and every point of the candidates sweep, it rolls the model out from the same
episode seeds and writes:
    <out>/results.json      {"rows": [...], "sweep": [...]}: one row per configuration with the
                            results contract's keys and the protocol that produced it
    <out>/candidates.json   the sweep as plot data (n_candidates, normalized_score, rule)
    <out>/episodes.json     every rollout's per-episode returns, lengths, successes and scores
                            ("rule@candidates" keys; the same starts, so rollouts pair up)
    <plots>/<rule>.png      some episodes in the task's picture, one per rule
    <plots>/<rule>_frames.png  a contact sheet: `protocol.frames` frames of the rule's first
                            episode, replayed and rendered (tasks with `render_env`: MuJoCo
                            offscreen with EGL, PushT with pygame; `dmc_envs.evaluation.frames`)
    <plots>/candidates.png  normalised score against the number of candidates, per rule

The model is a diffusion model (`pretrain`, `align`), a cascade (`fit_cascade`) or a baseline
policy (`fit_policy`: BC, IQL's policy), told apart by its checkpoint's kind. A baseline's run has
stage `baseline` and one row: its deterministic mean action, rule `none`, no sweep.

Every finished rollout is kept in `<out>/.resume/` until the outputs are written, so a killed
evaluation started again plays only the rollouts it had not finished
(`dmc_envs.evaluation.kept_rollouts`).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dmc_core.atomic import atomic_write_text
from dmc_core.checkpoint import checkpoint_metadata, file_sha256
from dmc_core.config import entry, to_plain
from dmc_core.data import TransitionDataset, read_dataset
from dmc_core.errors import ConfigError
from dmc_core.models import ControlModel, load_model
from dmc_core.models.cascade import is_cascade_checkpoint, load_cascade
from dmc_core.seeding import torch_generator
from dmc_core.training import choose_device
from dmc_critic import critic_learned_from, load_critic
from dmc_critic.policies import is_policy_checkpoint, load_policy
from dmc_envs.evaluation.cascade import CascadeProposer
from dmc_envs.evaluation.coherency import CoherencyProbe, coherency_probe
from dmc_envs.evaluation.config import (
    BASELINE_STAGE,
    Budget,
    EvalProtocol,
    EvaluateConfig,
    RunSpec,
)
from dmc_envs.evaluation.entropy import histogram_entropy
from dmc_envs.evaluation.episodes import (
    EpisodeResult,
    ObservationHistory,
    Scorer,
    Selection,
    roll_out,
)
from dmc_envs.evaluation.frames import RenderUnavailableError, write_contact_sheet
from dmc_envs.evaluation.kept_rollouts import KeptRollouts
from dmc_envs.evaluation.plots import plot_candidates
from dmc_envs.evaluation.policies import POLICY_FORMULATION, PolicyProposer
from dmc_envs.evaluation.proposers import ModelProposer, Proposer
from dmc_envs.pictures import draw_episodes
from dmc_envs.tasks import Task, task_for_dataset

__all__ = [
    "Bench",
    "Evaluated",
    "evaluate",
    "evaluate_proposer",
    "load_evaluated",
    "load_proposer",
    "write_contact_sheets",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bench:
    """What evaluating a model of one role on a dataset's task needs: the task, and the
    coherency measure for that role (None, with the reason, where the task lacks its piece)."""

    task: Task
    coherency: CoherencyProbe | None
    coherency_note: str

    @classmethod
    def from_dataset(
        cls, dataset: TransitionDataset, source: str, role: str, protocol: EvalProtocol
    ) -> Bench:
        """The task a dataset records, and its coherency measure for `role`."""
        task = task_for_dataset(dataset.attrs, source)
        width, plans = protocol.coherency_width, protocol.coherency_plans
        probe, note = coherency_probe(task, role, dataset.attrs, width, plans)
        return cls(task, probe, note)


@dataclass(frozen=True)
class Evaluated:
    """What a run rolls out, and what its rows say of the model behind it: the dataset it
    learned from, its kind and formulation, and the denoising steps of one decision."""

    proposer: Proposer
    dataset: str
    kind: str
    formulation: str
    denoising_steps: int

    @property
    def role(self) -> str:
        """`planner` or `policy`: which budget of the protocol, which coherency."""
        return self.proposer.role


def evaluate(config: EvaluateConfig, args: argparse.Namespace) -> None:
    """Evaluate `config.runs[args.name]`; write results and pictures (see the module doc)."""
    run = entry(config.runs, args.name, "evaluate.runs", args.params)
    device = choose_device(config.device)
    where = f"{args.params}: evaluate.runs.{args.name}"
    evaluated = load_evaluated(args.model, run, str(device), where)
    if evaluated.dataset != run.dataset:
        raise ConfigError(
            f"{args.params}: evaluate.runs.{args.name}.dataset is '{run.dataset}' but the model "
            f"{args.model} learned from '{evaluated.dataset}'"
        )
    protocol = config.protocol
    bench = Bench.from_dataset(read_dataset(args.dataset), args.dataset, evaluated.role, protocol)
    critic = load_critic(args.critic)
    if critic_learned_from(args.critic, critic) != run.dataset:
        raise ConfigError(
            f"{args.params}: evaluate.runs.{args.name}: the critic {args.critic} learned from "
            f"'{critic.spec.dataset}', the model from '{run.dataset}'"
        )
    proposer = evaluated.proposer
    budget = protocol.planner if proposer.role == "planner" else protocol.policy
    entropy = candidate_entropy(proposer, bench.task, budget.episodes, protocol)
    identity = _identity(args.name, run, evaluated, bench.task, args.critic)
    recipe = _protocol(evaluated, budget, protocol, bench.task, run.cascade_passes)
    summary_pairs, sweep_pairs = _configurations(protocol, budget, run)
    out, plots = Path(args.out), Path(args.plots)
    kept = KeptRollouts(out / ".resume", _resume_key(args, run, protocol, device))
    results = {}
    for rule, n in dict.fromkeys(summary_pairs + sweep_pairs):
        found = kept.get(rule, n)
        if found is None:
            found = evaluate_proposer(
                bench, proposer, critic.q_chunk, rule, n, budget.episodes, protocol
            )
            kept.put(rule, n, *found)
        else:
            log.info("%s @ %d: kept from an earlier run of this evaluation", rule, n)
        results[(rule, n)] = found
    rows = {
        pair: _row(identity, recipe, pair, result, bench, entropy)
        for pair, (result, _) in results.items()
    }
    by_key = {f"{rule}@{n}": rolled for (rule, n), rolled in results.items()}
    _write_timing(out, args.name, {key: seconds for key, (_, seconds) in by_key.items()})
    _write_episodes(out, args.name, {key: result for key, (result, _) in by_key.items()})
    summary = [rows[pair] for pair in summary_pairs]
    sweep = [rows[pair] for pair in sweep_pairs]
    again = [_restaged(row, stage) for stage in run.also_stages for row in summary]
    _write_results(out, summary + again, sweep)
    plots.mkdir(parents=True, exist_ok=True)
    for row in summary:
        episodes = results[_pair(row)][0].observations()[: protocol.plot_trajectories]
        draw_episodes(bench.task, episodes, plots / f"{row['selection']}.png", _title(row))
        _log_row(args.name, row)
    write_contact_sheets(bench.task, summary, results, plots, protocol)
    baseline = next((r for r in summary if r["selection"] == "none"), None)
    if sweep:
        plot_candidates(sweep, baseline, plots / "candidates.png", title=args.name)
    kept.clear()


def _resume_key(
    args: argparse.Namespace, run: RunSpec, protocol: EvalProtocol, device: torch.device
) -> dict[str, Any]:
    """What a kept rollout must have been played under: the run, the protocol, the device and
    the bytes of the model, critic and dataset."""
    return {
        "name": args.name,
        "run": to_plain(run),
        "protocol": to_plain(protocol),
        "device": str(device),
        "inputs": [file_sha256(path) for path in (args.model, args.critic, args.dataset)],
    }


def write_contact_sheets(
    task: Task,
    summary: list[dict[str, Any]],
    results: dict[tuple[str, int], tuple[EpisodeResult, float]],
    plots: Path,
    protocol: EvalProtocol,
) -> list[Path]:
    """`<plots>/<rule>_frames.png` for each summary row: `protocol.frames` frames of its first
    episode. None where `frames` is 0, the task has no `render_env` (Nav1D: its own picture
    draws the episodes) or cannot render here (a warning says why)."""
    if protocol.frames == 0:
        return []
    if task.render_env is None:
        log.info("task %s renders no frames (no render_env): no contact sheets", task.describe())
        return []
    written = []
    for row in summary:
        path = plots / f"{row['selection']}_frames.png"
        heading = (
            f"{row['task']}, {row['run']}: {row['model']} ({row['kind']}, stage {row['stage']}), "
            f"rule {row['selection']} @ {row['n_candidates']}"
        )
        result = results[_pair(row)][0]
        try:
            write_contact_sheet(task, result, protocol.seed, protocol.frames, path, heading)
        except RenderUnavailableError as err:
            log.warning("no contact sheets: %s", err)
            return written
        log.info("%s: contact sheet of its first episode in %s", row["selection"], path)
        written.append(path)
    return written


def load_evaluated(path: str, run: RunSpec, device: str, where: str) -> Evaluated:
    """What a checkpoint gives to roll out: a `fit_policy` output (a baseline, its runs' stage
    `baseline`), or a diffusion model or cascade (see `load_proposer`)."""
    if is_policy_checkpoint(path):
        return _baseline(path, run, device, where)
    if run.stage == BASELINE_STAGE:
        raise ConfigError(f"{where}.stage: '{BASELINE_STAGE}' is for fit_policy outputs: {path}")
    model, proposer = load_proposer(path, run, device, where)
    steps = model.formulation.num_steps * (1 + run.cascade_passes)
    return Evaluated(proposer, model.spec.dataset, model.kind, model.spec.formulation.name, steps)


def _baseline(path: str, run: RunSpec, device: str, where: str) -> Evaluated:
    """A baseline policy: its mean action, one sample per decision, no denoising."""
    if run.stage != BASELINE_STAGE:
        raise ConfigError(f"{where}.stage: {path} is a fit_policy output: set '{BASELINE_STAGE}'")
    policy = load_policy(path, device=device)
    proposer = PolicyProposer(policy)
    return Evaluated(proposer, policy.spec.dataset, policy.kind, POLICY_FORMULATION, 0)


def load_proposer(
    path: str, run: RunSpec, device: str, where: str
) -> tuple[ControlModel, Proposer]:
    """The model a checkpoint holds and its proposer: a `fit_cascade` checkpoint gives the model
    it refines, whose candidates the cascade refines `run.cascade_passes` times."""
    if not is_cascade_checkpoint(path):
        if run.cascade_passes:
            raise ConfigError(f"{where}.cascade_passes: {path} is no fit_cascade output")
        model = load_model(path, device=device)
        return model, ModelProposer(model)
    if not run.cascade_passes:
        raise ConfigError(f"{where}: {path} is a cascade; set cascade_passes (1 or 2)")
    cascade = load_cascade(path, device=device)
    if cascade.source is None:
        raise ConfigError(f"{path}: the cascade records no model to refine")
    base = ModelProposer(cascade.source)
    return cascade.source, CascadeProposer(base, cascade, run.cascade_passes)


def evaluate_proposer(
    bench: Bench,
    proposer: Proposer,
    scorer: Scorer | None,
    rule: str,
    candidates: int,
    episodes: int,
    config: EvalProtocol,
) -> tuple[EpisodeResult, float]:
    """Roll out one (rule, candidates) configuration; return the result and its wall time."""
    began = time.perf_counter()
    result = roll_out(
        bench.task,
        proposer,
        Selection(rule, candidates, config.softmax_temperature),
        scorer,
        episodes=episodes,
        seed=config.seed,
        coherency=bench.coherency,
        coherency_every=config.coherency_every,
        label=f"{rule} @ {candidates}",
    )
    seconds = time.perf_counter() - began
    score = bench.task.returns.normalized(result.returns.mean())
    log.info("%s @ %d: normalised score %.1f (%.1f s)", rule, candidates, score, seconds)
    return result, seconds


def candidate_entropy(proposer: Proposer, task: Task, episodes: int, config: EvalProtocol) -> float:
    """Entropy of `entropy_candidates` candidates at each evaluation start state (the first
    decision of every episode): a property of the model, the same for every rule."""
    envs = task.make_vector_env(episodes)
    try:
        first, _ = envs.reset(seed=config.seed)
    finally:
        envs.close()
    history = ObservationHistory(first, proposer.history_len)
    generator = torch_generator(config.seed + 2, proposer.device)
    proposal = proposer.propose(history.tensor(), config.entropy_candidates, generator)
    actions = proposal.actions[:, :, 0]
    # The histogram spans the task's action range.
    low, high = (torch.from_numpy(bound) for bound in task.action_bounds())
    return histogram_entropy(actions, low, high, config.entropy_bins)


def _configurations(
    config: EvalProtocol, budget: Budget, run: RunSpec
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """The (rule, candidates) pairs of the summary rows (the run's rules, else the protocol's)
    and of the sweep (empty if the run turns it off). A baseline acts by its mean action: one
    row, one sample, no sweep."""
    if run.stage == BASELINE_STAGE:
        return [("none", 1)], []
    summary_rules = run.rules or config.rules
    summary = [(rule, 1 if rule == "none" else budget.candidates) for rule in summary_rules]
    rules = config.sweep_rules if run.sweep else []
    sweep = [(rule, n) for rule in rules for n in config.sweep_candidates]
    return list(dict.fromkeys(summary)), list(dict.fromkeys(sweep))


def _restaged(row: dict[str, Any], stage: str) -> dict[str, Any]:
    """A row once more under another stage (`also_stages`), named `<model>_<stage>` in the
    headline (e.g. `policy_aligned`), with the run that evaluated it in `same_as`."""
    return {**row, "stage": stage, "run": f"{row['model']}_{stage}", "same_as": row["run"]}


def _pair(row: dict[str, Any]) -> tuple[str, int]:
    return row["selection"], row["n_candidates"]


def _identity(
    name: str, run: RunSpec, evaluated: Evaluated, task: Task, critic: str
) -> dict[str, Any]:
    """The keys that say what every row of this run evaluated, with the critic's ranking of the
    data (`critic_ranking`: Spearman of Q with the returns-to-go, as `fit_critic` recorded it;
    None for a critic that did not record one): how far a choice by Q can be trusted."""
    return {
        "task": task.name,
        "dataset": run.dataset,
        "model": run.label or run.model,
        "kind": evaluated.kind,
        "formulation": evaluated.formulation,
        "stage": run.stage,
        "run": name,
        "critic": run.critic,
        "critic_ranking": checkpoint_metadata(critic).get("spearman_returns_to_go"),
    }


def _protocol(
    evaluated: Evaluated,
    budget: Budget,
    config: EvalProtocol,
    task: Task,
    cascade_passes: int = 0,
) -> dict[str, Any]:
    """How every row of this run was produced (written into each row). A cascade's steps are
    counted as the refined model's (the cascade is warm-started from the same architecture)."""
    return {
        "episodes": budget.episodes,
        "seed": config.seed,
        "start_states": task.starts,
        "max_episode_steps": task.max_episode_steps,
        "score_references": [task.returns.low, task.returns.high, task.returns.source],
        "denoising_steps": evaluated.denoising_steps,
        "cascade_passes": cascade_passes,
        "softmax_temperature": config.softmax_temperature,
        "coherency": "dynamics kernel" if evaluated.role == "planner" else "behaviour density",
        "coherency_width": config.coherency_width,
        "coherency_every": config.coherency_every,
        "coherency_plans": config.coherency_plans,
        "entropy_candidates": config.entropy_candidates,
        "entropy_bins": config.entropy_bins,
    }


def _row(
    identity: dict[str, Any],
    protocol: dict[str, Any],
    pair: tuple[str, int],
    result: EpisodeResult,
    bench: Bench,
    entropy: float,
) -> dict[str, Any]:
    """One row of the results contract (the keys of `summary.json`); `success_rate` where the
    task defines success, `<score>_mean` for each of the task's episode scores, and the reason
    where coherency could not be measured."""
    returns = result.returns
    extra: dict[str, Any] = {}
    if result.successes is not None:
        extra["success_rate"] = float(result.successes.mean())
    for name, values in result.scores.items():
        extra[f"{name}_mean"] = float(values.mean())
    if result.coherency is None:
        extra["coherency_missing"] = bench.coherency_note or result.coherency_note
    return {
        **identity,
        "selection": pair[0],
        "n_candidates": pair[1],
        "episodes": int(returns.size),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "normalized_score": float(bench.task.returns.normalized(returns.mean())),
        "coherency": result.coherency,
        **extra,
        "candidate_entropy": entropy,
        "decisions": result.decisions,
        "protocol": protocol,
    }


def _write_timing(out: Path, name: str, seconds: dict[str, float]) -> None:
    """`timing.json`: the seconds of each rule's rollouts. DVC ignores it (`.dvcignore`), so
    the results a later stage reads hold no wall-clock figure."""
    timing = {
        "stage": "evaluate",
        "name": name,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    atomic_write_text(out / "timing.json", json.dumps(timing, indent=2) + "\n")


def _write_episodes(out: Path, name: str, results: dict[str, EpisodeResult]) -> None:
    """`episodes.json`: every (rule, candidates) rollout's per-episode outcomes. The episodes
    of two rollouts of one protocol start from the same states, so they pair one to one."""
    document = {"run": name, "rollouts": {key: r.outcomes() for key, r in results.items()}}
    atomic_write_text(out / "episodes.json", json.dumps(document) + "\n")


def _write_results(out: Path, summary: list[dict[str, Any]], sweep: list[dict[str, Any]]) -> None:
    document = {"rows": summary, "sweep": sweep}
    atomic_write_text(out / "results.json", json.dumps(document, indent=2) + "\n")
    curve = [
        {
            "n_candidates": r["n_candidates"],
            "normalized_score": r["normalized_score"],
            "rule": r["selection"],
        }
        for r in sweep
    ]
    atomic_write_text(out / "candidates.json", json.dumps(curve, indent=2) + "\n")


def _title(row: dict[str, Any]) -> str:
    coherency = "n/a" if row["coherency"] is None else f"{row['coherency']:.2f}"
    return (
        f"{row['run']} ({row['kind']}, {row['formulation']}, {row['stage']}): "
        f"{row['selection']} @ {row['n_candidates']}\n"
        f"normalised score {row['normalized_score']:.1f}, coherency {coherency}"
    )


def _log_row(name: str, row: dict[str, Any]) -> None:
    log.info(
        "%s %s @ %d: return %.3f ± %.3f, normalised score %.1f, coherency %s, entropy %.2f",
        name,
        row["selection"],
        row["n_candidates"],
        row["return_mean"],
        row["return_std"],
        row["normalized_score"],
        "n/a" if row["coherency"] is None else f"{row['coherency']:.3f}",
        row["candidate_entropy"],
    )
