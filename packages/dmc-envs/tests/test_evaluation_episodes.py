"""Vectorised evaluation rollouts: the score's two ends, batching, selection, a real model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from dmc_core.data import TransitionDataset
from dmc_core.models import ModelSpec, build_model
from dmc_core.models.spec import FormulationSpec
from dmc_envs.evaluation import (
    ModelProposer,
    OptimalProposer,
    Proposal,
    RandomProposer,
    Selection,
    roll_out,
)
from dmc_envs.nav1d import Nav1DSolution, Nav1DTask, UniformPolicy, rollout
from dmc_envs.tasks import build_task
from dmc_envs.tasks.nav1d import Nav1D


@pytest.fixture(scope="module")
def nav1d() -> Nav1D:
    return build_task("nav1d", {})  # type: ignore[return-value]


@pytest.fixture(scope="module")
def solution(nav1d: Nav1D) -> Nav1DSolution:
    return nav1d.solution


def score(solution: Nav1DSolution, proposer, selection: Selection, episodes: int, scorer=None):
    task = build_task("nav1d", solution.task.params)
    result = roll_out(task, proposer, selection, scorer, episodes=episodes, seed=7)
    return result, task.returns.normalized(result.returns.mean())


def test_the_optimal_policy_scores_100(solution: Nav1DSolution) -> None:
    result, value = score(solution, OptimalProposer(solution), Selection("none", 1), 64)
    assert value == pytest.approx(100.0, abs=1.0)
    horizon = solution.task.horizon
    assert [len(e) for e in result.observations()] == [horizon + 1] * 64
    assert len(result.transitions) == 64 * horizon and result.transitions.num_episodes == 64


def test_uniform_random_actions_score_about_zero(solution: Nav1DSolution) -> None:
    _, value = score(solution, RandomProposer(), Selection("none", 1), 512)
    assert abs(value) < 6.0, value


def test_a_labelled_roll_out_shows_its_steps_and_an_unlabelled_one_is_silent(
    solution: Nav1DSolution, capsys: pytest.CaptureFixture[str]
) -> None:
    task = build_task("nav1d", solution.task.params)
    roll_out(task, RandomProposer(), Selection("none", 1), None, episodes=3, seed=7)
    assert capsys.readouterr().err == ""
    roll_out(task, RandomProposer(), Selection("none", 1), None, episodes=3, seed=7, label="q @ 4")
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()[-1]
    steps = task.max_episode_steps
    assert bar.startswith("q @ 4: 100%") and f"{steps}/{steps}" in bar and "running=0" in bar


class Recording:
    """Picks the action nearest the optimum's only if the selection is right; records calls."""

    role, history_len, device = "policy", 2, torch.device("cpu")

    def __init__(self, solution: Nav1DSolution, action_exec: int = 1) -> None:
        self.solution, self.action_exec = solution, action_exec
        self.calls: list[tuple[tuple[int, ...], int]] = []

    def propose(self, history: Tensor, n: int, generator: torch.Generator) -> Proposal:
        self.calls.append((tuple(history.shape), n))
        # Candidate k is the action -1 + 2k / (n - 1): a grid over the action range.
        grid = torch.linspace(-1.0, 1.0, n) if n > 1 else torch.zeros(1)
        chunk = grid[None, :, None, None].expand(history.shape[0], n, self.action_exec, 1)
        return Proposal(actions=chunk.contiguous())


def optimal_q(solution: Nav1DSolution):
    """A critic that is exact on Nav1D: r_t(s') + V*_{t+1}(s')."""

    def q(obs: Tensor, act: Tensor) -> Tensor:
        """Q of each candidate's first action; act: (N, action_exec, 1)."""
        s = obs[:, 0].double().numpy()
        t = round(float(obs[0, 1]) * solution.task.horizon)
        nxt = solution.task.next_state(s, act[:, 0, 0].double().numpy())
        value = solution.task.reward(t, nxt) + solution.optimal_value(nxt, t + 1)
        return torch.from_numpy(value)

    return q


def test_one_proposer_call_per_decision_for_all_episodes_and_candidates(
    solution: Nav1DSolution,
) -> None:
    proposer = Recording(solution)
    score(solution, proposer, Selection("q_argmax", 5), 10, scorer=optimal_q(solution))
    assert proposer.calls == [((10, 2, 2), 5)] * solution.task.horizon


def test_action_chunks_halve_the_decisions(solution: Nav1DSolution) -> None:
    proposer = Recording(solution, action_exec=2)
    result, _ = score(solution, proposer, Selection("none", 1), 4)
    assert result.decisions == len(proposer.calls) == solution.task.horizon // 2


def test_q_argmax_with_an_exact_critic_beats_one_sample(solution: Nav1DSolution) -> None:
    q = optimal_q(solution)
    _, one = score(solution, Recording(solution), Selection("none", 1), 32, scorer=q)
    _, best = score(solution, Recording(solution), Selection("q_argmax", 41), 32, scorer=q)
    assert best > 95.0 and best > one + 20.0, (one, best)


def test_the_critic_sees_the_whole_chunk_each_candidate_would_execute(
    solution: Nav1DSolution,
) -> None:
    """A critic of action chunks scores what will run: a scorer handed only the first action
    (as before chunks) would record (N, 1)."""
    seen: list[tuple[int, ...]] = []

    def q(obs: Tensor, act: Tensor) -> Tensor:
        seen.append(tuple(act.shape))
        return act.sum(dim=(1, 2))

    score(solution, Recording(solution, action_exec=2), Selection("q_argmax", 3), 4, scorer=q)
    assert set(seen) == {(4 * 3, 2, 1)}


class Planning(Recording):
    """A planner: candidate k executes the action of `Recording`'s grid and plans 3 steps,
    the last of them -k (the best-looking plan by its last action is candidate 0)."""

    role = "planner"

    def propose(self, history: Tensor, n: int, generator: torch.Generator) -> Proposal:
        actions = super().propose(history, n, generator).actions
        plans = actions.expand(-1, -1, 3, -1).clone()
        plans[:, :, 2, 0] = -torch.arange(n, dtype=plans.dtype)
        return Proposal(actions=actions, plan_states=torch.zeros_like(plans), plan_actions=plans)


def test_a_planners_candidates_are_scored_by_their_plans(solution: Nav1DSolution) -> None:
    """A critic of action chunks scores a planner's planned actions (it executes the first and
    plans again), not only the action it executes."""
    seen: list[tuple[int, ...]] = []

    def q(obs: Tensor, act: Tensor) -> Tensor:
        seen.append(tuple(act.shape))
        return act[:, -1, 0]

    proposer = Planning(solution)
    result, _ = score(solution, proposer, Selection("q_argmax", 5), 2, scorer=q)
    assert set(seen) == {(2 * 5, 3, 1)}
    # Candidate 0 executes the grid's first action, -1, at every decision.
    assert np.all(result.transitions.actions == -1.0)


def test_rules_that_need_a_critic_say_so(solution: Nav1DSolution) -> None:
    with pytest.raises(ValueError, match="needs a critic"):
        score(solution, Recording(solution), Selection("q_argmax", 4), 2)


def test_start_states_are_uniform_and_seeded(nav1d: Nav1D) -> None:
    first, _ = nav1d.make_vector_env(1000).reset(seed=3)
    again, _ = nav1d.make_vector_env(1000).reset(seed=3)
    np.testing.assert_array_equal(first, again)
    starts = np.random.default_rng(3).uniform(-1, 1, 1000).astype(np.float32)
    np.testing.assert_array_equal(first[:, 0], starts)
    assert first.min() >= -1.0 and first.max() <= 1.0 and abs(first[:, 0].mean()) < 0.1


@pytest.mark.parametrize("kind", ["diffuser", "diffusion_policy"])
def test_a_model_samples_every_episode_and_candidate_in_one_network_batch(kind: str) -> None:
    spec = ModelSpec(
        kind=kind,
        horizon=4,
        history=1 if kind == "diffuser" else 2,
        inpainting="first_state" if kind == "diffuser" else "none",
        backbone={"name": "mlp", "hidden": 16, "blocks": 1},
        formulation=FormulationSpec(steps=5),
    )
    task = Nav1DTask.from_params(horizon=6)
    rng = np.random.default_rng(0)
    data = rollout(task, UniformPolicy(), rng.uniform(-1, 1, size=8), rng)
    model = build_model(spec, TransitionDataset(**data, attrs={}))
    batches: list[int] = []
    model.net.register_forward_hook(lambda _m, inputs, _o: batches.append(inputs[0].shape[0]))
    proposer = ModelProposer(model)
    history = torch.zeros(6, spec.history, 2)
    proposal = proposer.propose(history, 3, torch.Generator().manual_seed(0))
    assert batches == [18] * 5  # one call per denoising step, 6 episodes x 3 candidates
    assert proposal.actions.shape == (6, 3, 1, 1)
    if kind == "diffuser":
        assert proposal.plan_states.shape == (6, 3, 4, 2)
        np.testing.assert_allclose(proposal.plan_states[:, :, 0], 0.0, atol=1e-6)  # in-painted
    else:
        assert proposal.plan_states is None
