"""Command `gap`: how far an aligned model's one sample went towards its foundation's best of n,
in the critic's eyes, at the states the aligned model itself visits.

    python -m dmc_envs gap --aligned data/models/diffuser_sft/model.safetensors \
        --foundation data/models/diffuser/model.safetensors \
        --critic data/critics/full/critic.safetensors \
        --dataset data/datasets/plate-slide/medium.hdf5 --candidates 16 --out gap.json

The aligned model plays `--episodes` episodes, one sample per decision, from the evaluation
protocol's starts (`--seed`, default 1000). At `--states` of the states they visit (drawn
uniformly with a fixed seed), the foundation and the aligned model each propose `--candidates`
samples, and the critic scores every one as `q_argmax` ranks them. The table gives the mean Q of:
the foundation's one sample (the mean over its candidates), its best of n, the aligned model's
one sample and its best of n; over all those states and split by whether the state's episode
succeeded. Below it: the share of the gap closed, (aligned one - foundation one) / (foundation
best of n - foundation one), and the share of the foundation's candidates an aligned sample beats
(a foundation sample beats about half; the best of n, n / (n + 1) of them on average).

How to read it: where the aligned one sample reaches the foundation's best of n in Q at its own
states and still succeeds less often than the foundation's `q_argmax@n`, the critic cannot tell
what succeeds from what does not, and more alignment to it will not help; where it closes only
part of the gap, the fit (the pass, its budget, the model's capacity) is what limits it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from dmc_core.atomic import atomic_write_text
from dmc_core.cli import Arg, Command
from dmc_core.data import TransitionDataset, read_dataset
from dmc_core.errors import ConfigError
from dmc_core.models import WindowSampler, load_model
from dmc_core.seeding import torch_generator
from dmc_core.training import choose_device
from dmc_critic import critic_learned_from, load_critic
from dmc_envs.evaluation.episodes import Scorer, Selection, roll_out
from dmc_envs.evaluation.proposers import ModelProposer, Proposer
from dmc_envs.tasks import Task, task_for_dataset

__all__ = [
    "GAP_COMMAND",
    "Gap",
    "candidate_scores",
    "measure_gap",
    "render_gap",
    "visited_histories",
]

NAME = "gap"
ROWS = ("foundation one sample", "foundation best of n", "aligned one sample", "aligned best of n")


@dataclass(frozen=True)
class Gap:
    """Mean Q of each row of `ROWS` over all states, and over the states of successful and of
    failed episodes (None where the task has no success or no state falls there)."""

    candidates: int
    episodes: int
    states: int
    success_rate: float | None
    rows: dict[str, dict[str, float | None]]
    closed: float | None  # None where the foundation's best of n is no better than one sample
    beaten: float


def visited_histories(transitions: TransitionDataset, length: int) -> Tensor:
    """The last `length` observations at every recorded step, each episode's first observation
    repeated before its start, as training windows pad (`WindowSampler`, which the alignment
    passes' conditions use too). Shapes: (rows, length, obs_dim)."""
    windows = WindowSampler(transitions, horizon=1, history=length)
    return windows.window(torch.arange(windows.num_starts)).history


@torch.no_grad()
def candidate_scores(
    proposer: Proposer,
    scorer: Scorer,
    histories: Tensor,
    n: int,
    generator: torch.Generator,
    batch: int = 64,
    label: str | None = None,
) -> np.ndarray:
    """Q of `n` candidates of `proposer` at every history. Shapes: returns (histories, n)."""
    scores = []
    for start in tqdm(range(0, len(histories), batch), desc=label, disable=label is None):
        history = histories[start : start + batch]
        proposal = proposer.propose(history, n, generator)
        observation = history[:, -1].to(proposal.actions.device).repeat_interleave(n, dim=0)
        q = scorer(observation, proposal.scored_actions.flatten(0, 1))
        scores.append(q.reshape(len(history), n).cpu().numpy())
    return np.concatenate(scores)


def measure_gap(
    task: Task,
    foundation: Proposer,
    aligned: Proposer,
    scorer: Scorer,
    *,
    episodes: int,
    states: int,
    candidates: int,
    seed: int,
) -> Gap:
    """Play `aligned`, then score both models' candidates at `states` of its visited states."""
    played = roll_out(
        task, aligned, Selection("none", 1), None, episodes=episodes, seed=seed, label="episodes"
    )
    histories = visited_histories(played.transitions, aligned.history_len)
    chosen = np.sort(np.random.default_rng(0).permutation(len(histories))[:states])
    histories = histories[torch.as_tensor(chosen)]
    generator = torch_generator(seed + 2, foundation.device)
    found = candidate_scores(
        foundation, scorer, histories, candidates, generator, label="foundation"
    )
    generator = torch_generator(seed + 3, aligned.device)
    ours = candidate_scores(aligned, scorer, histories, candidates, generator, label="aligned")
    columns = {"foundation one sample": found.mean(1), "foundation best of n": found.max(1)}
    columns |= {"aligned one sample": ours.mean(1), "aligned best of n": ours.max(1)}
    succeeded = None
    if played.successes is not None:
        succeeded = np.repeat(played.successes.astype(bool), played.lengths)[chosen]
    gain = columns["foundation best of n"].mean() - columns["foundation one sample"].mean()
    moved = columns["aligned one sample"].mean() - columns["foundation one sample"].mean()
    beaten = (ours[:, :, None] > found[:, None, :]).mean()
    return Gap(
        candidates=candidates,
        episodes=episodes,
        states=len(chosen),
        success_rate=None if played.successes is None else float(played.successes.mean()),
        rows={name: _split(values, succeeded) for name, values in columns.items()},
        closed=float(moved / gain) if gain > 0 else None,
        beaten=float(beaten),
    )


def _split(values: np.ndarray, succeeded: np.ndarray | None) -> dict[str, float | None]:
    """The mean of `values` over all states, and over those of successful and failed episodes."""
    means: dict[str, float | None] = {"all": float(values.mean())}
    for name, where in (
        ("success", succeeded),
        ("failure", None if succeeded is None else ~succeeded),
    ):
        means[name] = None if where is None or not where.any() else float(values[where].mean())
    return means


def render_gap(gap: Gap) -> str:
    """The Markdown table of `gap`, with the gap closed and the share beaten below it."""
    success = "" if gap.success_rate is None else f", {gap.success_rate:.0%} of them successful"
    lines = [
        f"Q at {gap.states} states of the aligned model's {gap.episodes} episodes{success}; "
        f"n = {gap.candidates}",
        "",
        "| | all states | successful episodes | failed episodes |",
        "|---|---:|---:|---:|",
    ]
    for name in ROWS:
        cells = [_cell(gap.rows[name][key]) for key in ("all", "success", "failure")]
        shown = name.removesuffix(" n") + f" {gap.candidates}" if name.endswith(" n") else name
        lines.append(f"| {shown} | {' | '.join(cells)} |")
    lines += [
        "",
        f"gap closed: {_share(gap.closed)} of the way from the foundation's one sample to its "
        f"best of {gap.candidates}; an aligned sample beats {gap.beaten:.0%} of the foundation's "
        "candidates",
    ]
    return "\n".join(lines) + "\n"


def _share(value: float | None) -> str:
    return (
        "n/a (no gap: its best of n is no better than one sample)"
        if value is None
        else f"{value:.0%}"
    )


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _run(args: argparse.Namespace) -> None:
    """The command: read the counts, check the inputs belong together, measure, print, write."""
    counts = {
        name: _count(getattr(args, name), f"--{name}", default, least)
        for name, (default, least, _) in COUNT_FLAGS.items()
    }
    device = str(choose_device("auto"))
    foundation, aligned = (load_model(p, device=device) for p in (args.foundation, args.aligned))
    critic = load_critic(args.critic)
    learned = {
        args.foundation: foundation.spec.dataset,
        args.aligned: aligned.spec.dataset,
        args.critic: critic_learned_from(args.critic, critic),
    }
    if len(set(learned.values())) > 1:
        told = ", ".join(f"{path} from '{name}'" for path, name in learned.items())
        raise ConfigError(f"{NAME}: the models and the critic learned from different data: {told}")
    task = task_for_dataset(read_dataset(args.dataset).attrs, args.dataset)
    proposers = ModelProposer(foundation), ModelProposer(aligned)
    gap = measure_gap(task, *proposers, critic.q_chunk, **counts)
    print(render_gap(gap), end="")
    if args.out:
        record: Mapping[str, Any] = {"inputs": learned, **asdict(gap)}
        atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")


# The counting flags: default, least value, help (one place for the default and its help).
COUNT_FLAGS: dict[str, tuple[int, int, str]] = {
    "episodes": (64, 1, "episodes the aligned model plays"),
    "states": (1024, 1, "visited states the candidates are drawn at"),
    "candidates": (16, 1, "n, candidates per state of each model"),
    "seed": (1000, 0, "the episodes' starts, the evaluation protocol's"),
}


def _count(value: str | None, flag: str, default: int, least: int) -> int:
    """`value` as a whole number of at least `least` (`default` where not given); refused,
    naming `flag`, otherwise."""
    if value is None:
        return default
    if not value.isdigit() or int(value) < least:
        raise ConfigError(f"{NAME} {flag}: '{value}' is not a whole number of at least {least}")
    return int(value)


GAP_COMMAND = Command(
    name=NAME,
    summary="How far an aligned model's one sample went towards its foundation's best of n by Q.",
    args=(
        Arg("--aligned", "the aligned model (.safetensors) that plays the episodes"),
        Arg("--foundation", "the model it was aligned from (.safetensors)"),
        Arg("--critic", "the critic that scores candidates (.safetensors)"),
        Arg("--dataset", "the dataset both learned from (.hdf5): names the task"),
        *(
            Arg(f"--{name}", f"{text} (default {default})", False)
            for name, (default, _, text) in COUNT_FLAGS.items()
        ),
        Arg("--out", "a JSON file of the numbers (default: print only)", False, output=True),
    ),
    run=_run,
)
